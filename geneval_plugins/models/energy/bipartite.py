"""The family base the Bernoulli RBM (``rbm``) and the Gaussian–Bernoulli RBM (``grbm``) share,
without torch.

* :func:`bipartite_train_options` — the training options of both families: the hidden layer's
  size and the training method (:data:`TRAINING_METHODS`: maximum likelihood with the exact
  gradient, persistent CD or CD-k).
* :class:`BipartiteFamily` — the family hooks of the core training loop
  (:mod:`geneval.training`): CD/PCD or exact training and block Gibbs sampling.

The networks, the CD objective, the exact log Z by enumeration and the loaded models live in
:mod:`~geneval_plugins.models.energy.bipartite_network`, which the hooks import when a family
trains or loads, so that registering ``rbm`` and ``grbm`` imports no torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from geneval.plugin import InputError, Option, TrainableFamily, TrainingStep, training_options

if TYPE_CHECKING:
    import torch
    from torch import nn

    from geneval.plugin import Checkpoint
    from geneval_plugins.models.energy.bipartite_network import BipartiteRBM, GibbsModel

#: Largest layer enumerated for an exact log Z (2^24 ≈ 1.7e7 configurations).
MAX_ENUMERATED_UNITS = 24
#: The training methods: maximum likelihood with the exact gradient (the hidden layer
#: enumerated), persistent CD (Tieleman 2008) or CD-k from the data (Hinton 2002).
TRAINING_METHODS = ("exact", "pcd", "cd")
#: Largest hidden layer ``method=exact`` enumerates at every step (2^20 ≈ 10^6 states).
MAX_EXACT_TRAINING_UNITS = 20


def bipartite_train_options(**extra: Option) -> dict[str, Option]:
    """Training options shared by ``rbm`` and ``grbm`` (plus ``extra``)."""
    return {
        **training_options(lr=1e-3, batch_size=100),
        "hidden": Option(
            16,
            f"hidden units (exact log Z needs a layer of at most {MAX_ENUMERATED_UNITS})",
            low=1,
        ),
        "method": Option(
            "exact",
            "exact: maximum likelihood, log Z by enumerating the hidden layer at every step "
            f"(at most {MAX_EXACT_TRAINING_UNITS} hidden units); pcd: persistent CD; cd: CD-k",
            choices=TRAINING_METHODS,
        ),
        "k": Option(5, "block Gibbs steps per update", low=1),
        "chains": Option(0, "persistent chains of pcd (0: batch_size)", low=0),
        "weight_decay": Option(1e-4, "L2 penalty ½·λ‖W‖² on the weights", low=0.0),
        "init_std": Option(
            0.01, "standard deviation of the initial weights", low=0.0, low_exclusive=True
        ),
        "sample_steps": Option(1000, "block Gibbs steps of the default sampling", low=1),
        **extra,
    }


class BipartiteFamily(TrainableFamily):
    """The family hooks ``rbm`` and ``grbm`` share: CD/PCD training and Gibbs sampling.

    Subclasses set ``name``, ``samplers`` (block Gibbs returning E[v | h] of the last step
    first, the sampled v second), ``train_options``, ``capabilities``, and define the
    properties ``network`` (a :class:`~geneval_plugins.models.energy.bipartite_network.
    BipartiteRBM` subclass with a static ``to_visible``), ``model_class`` and
    ``exact_model_class`` (the loaded-model classes, the latter for networks with exact log Z),
    which import the family's network module, and implement :meth:`make_network`.
    """

    default_steps = 10000
    arch_options: tuple[str, ...] = ("hidden",)

    @property
    def network(self) -> type[BipartiteRBM]:
        """The network class (imports the family's network module)."""
        raise NotImplementedError

    @property
    def model_class(self) -> type[GibbsModel]:
        """The loaded model of a network without exact log Z."""
        raise NotImplementedError

    @property
    def exact_model_class(self) -> type[GibbsModel]:
        """The loaded model of a network whose smaller layer can be enumerated."""
        raise NotImplementedError

    def make_network(self, arch: Mapping[str, Any], n_visible: int) -> BipartiteRBM:
        """An uninitialised network of the size ``arch`` describes."""
        raise NotImplementedError

    def build_network(
        self, arch: Mapping[str, Any], image_shape: tuple[int, int, int]
    ) -> BipartiteRBM:
        """The network ``arch`` describes."""
        return self.make_network(arch, int(math.prod(image_shape)))

    def prepare(self, images: torch.Tensor, arch: Mapping[str, Any]) -> torch.Tensor:
        """Images → visible vectors as the network sees them."""
        return self.network.to_visible(images)

    def initialise(
        self,
        net: nn.Module,
        data: torch.Tensor,
        options: Mapping[str, Any],
        generator: torch.Generator,
    ) -> None:
        """W ~ N(0, init_std²) and biases from the data (Hinton 2010, §8)."""
        net.init_from_data(data, float(options["init_std"]), generator)

    def initial_state(
        self, net: nn.Module, data: torch.Tensor, step: TrainingStep
    ) -> dict[str, torch.Tensor]:
        """Persistent chains (``pcd``) from the network's chain start."""
        if step.options["method"] != "pcd":
            return {}
        n = int(step.options["chains"]) or int(step.options["batch_size"])
        return {"chains": net.initial_visible(n, step.generator)}

    def positive(self, batch: torch.Tensor, step: TrainingStep) -> torch.Tensor:
        """The positive-phase visibles v⁺ of a minibatch (default: the minibatch itself)."""
        return batch

    def architecture(self, options: Mapping[str, Any], images: torch.Tensor) -> dict[str, Any]:
        """Hidden units and the visible layer's size (C·H·W)."""
        if options["method"] == "exact" and int(options["hidden"]) > MAX_EXACT_TRAINING_UNITS:
            raise InputError(
                f"--opt hidden={options['hidden']}: method=exact enumerates 2^hidden states at "
                f"every step (at most {MAX_EXACT_TRAINING_UNITS}); use method=pcd"
            )
        return {
            **super().architecture(options, images),
            "visible": int(math.prod(images.shape[1:])),
        }

    def loss(self, net: nn.Module, batch: torch.Tensor, step: TrainingStep) -> torch.Tensor:
        """The negative log-likelihood, or the CD objective, plus ½λ‖W‖²
        (:func:`~geneval_plugins.models.energy.bipartite_network.bipartite_loss`, with
        v⁺ from :meth:`positive`)."""
        from geneval_plugins.models.energy.bipartite_network import bipartite_loss

        return bipartite_loss(net, batch, step, positive=self.positive)

    def sampling(
        self, options: Mapping[str, Any], arch: Mapping[str, Any], data: torch.Tensor
    ) -> dict[str, Any]:
        """Block Gibbs with ``sample_steps`` steps; the conditional mean by default."""
        steps = {"steps": int(options["sample_steps"])}
        return {"sampler": self.samplers[0], **{name: steps for name in self.samplers}}

    def make_model(
        self, net: nn.Module, checkpoint: Checkpoint, device: torch.device
    ) -> GibbsModel:
        """The loaded model (``exact_model_class`` when the network has exact log Z)."""
        cls = self.exact_model_class if net.has_exact_log_z else self.model_class
        return cls(net, checkpoint.config, image_shape=checkpoint.image_shape, device=device)
