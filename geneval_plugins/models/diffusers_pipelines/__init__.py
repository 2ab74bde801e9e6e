"""Model family ``diffusers``: Hugging Face diffusers pipelines as generators.

The entry point, :mod:`~geneval_plugins.models.diffusers_pipelines.family`, imports neither
torch nor diffusers; :mod:`~geneval_plugins.models.diffusers_pipelines.schedulers` names the
schedulers ``--sampler`` may swap in (a torch-free table), and
:mod:`~geneval_plugins.models.diffusers_pipelines.pipeline_model` loads a pipeline safely and
samples it (it needs the ``geneval[diffusers]`` extra).
"""
