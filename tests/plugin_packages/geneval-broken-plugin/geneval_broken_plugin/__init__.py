"""A plugin that fails on import, to check that geneval reports it once and carries on."""

raise RuntimeError("this plugin is broken on purpose")
