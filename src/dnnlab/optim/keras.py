"""The book's optimizers with Keras 3's update rules, as ``torch.optim`` optimizers.

``parity=keras`` builds these instead of torch's classes (``conf/parity/keras.yaml``,
``optimizers``). They take torch's argument names (``lr``, ``betas``, ``eps``, ``alpha`` for
RMSprop's rho), so the optimizer files, overrides and range checks are the same under both
parities, but each step follows Keras 3's equations, which differ from torch's where the book's
numbers would show it:

- SGD with momentum keeps Keras' velocity ``v = m*v - lr*g`` (past learning rates stay in it);
  torch keeps ``b = m*b + g`` and multiplies by today's LR. Equal at a constant LR only.
- Adam, AdamW, Adamax add epsilon to ``sqrt(v)`` (Adamax: to ``u``) before the bias
  correction; torch after it.
- RMSprop and Adagrad add epsilon inside the square root; torch outside.
- Nadam's momentum schedule is ``beta1 * (1 - 0.5 * 0.96^t)``; torch's (and Keras 2's)
  ``0.96^(0.004 t)``.
- ``weight_decay`` is Keras' decoupled decay ``w -= lr * wd * w`` before the update, for every
  optimizer (torch's SGD, Adam, ... add ``wd * w`` to the gradient instead).

Every step reads ``group["lr"]`` (and ``momentum`` / ``betas``), so torch's LR schedulers and
1cycle's momentum drive them as they drive torch's optimizers. The state holds tensors and
plain numbers only, so checkpoints load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from dnnlab.errors import ConfigError


def scalars(param: Tensor, *values: float) -> list[Tensor]:
    """Numbers as 0-d tensors in the parameter's precision: Keras computes step sizes, bias
    corrections and momentum factors in float32, and the last digits show after many steps."""
    return [torch.tensor(v, dtype=param.dtype, device=param.device) for v in values]


class KerasOptimizer(Optimizer):
    """The loop every Keras-rule optimizer shares: decoupled weight decay, then the rule.

    Subclasses implement :meth:`update` for one parameter and its state; ``state["step"]``
    counts that parameter's updates (Keras' ``iterations + 1`` during the update).
    """

    # How many tensors of each parameter's size the state keeps (the memory estimate).
    state_tensors: Callable[[dict[str, Any]], int] = staticmethod(lambda node: 2)

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        super().__init__(params, defaults)

    @staticmethod
    def check_config(node: Mapping[str, Any], key: str = "optimizer") -> None:
        """Refuse, before any data is read, a value Keras' optimizer has no counterpart for."""

    def init_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def update(
        self, param: Tensor, grad: Tensor, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if not state:
                    state.update(step=0, **self.init_state(param, group))
                state["step"] += 1
                if group["weight_decay"]:
                    param.mul_(1 - group["weight_decay"] * group["lr"])
                self.update(param, param.grad, state, group)
        return loss


class SGD(KerasOptimizer):
    """Keras' SGD: ``v = momentum*v - lr*g``; ``w += v`` (Nesterov: ``w += momentum*v - lr*g``)."""

    state_tensors = staticmethod(lambda node: int(bool(node.get("momentum"))))

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 0.01,
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        self.check_config({"dampening": dampening})
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": 0.0,
            "nesterov": nesterov,
            "weight_decay": weight_decay,
        }
        super().__init__(params, defaults)

    @staticmethod
    def check_config(node: Mapping[str, Any], key: str = "optimizer") -> None:
        if node.get("dampening"):
            raise ConfigError(
                f"{key}.dampening={node['dampening']} has no Keras equivalent (Keras' SGD has "
                f"no dampening); set {key}.dampening=0 or parity=pytorch"
            )

    def init_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        return {"velocity": torch.zeros_like(param)} if group["momentum"] else {}

    def update(
        self, param: Tensor, grad: Tensor, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        lr, momentum = group["lr"], group["momentum"]
        if not momentum:
            param.add_(grad, alpha=-lr)
            return
        velocity = state.setdefault("velocity", torch.zeros_like(param))  # 1cycle may add momentum
        velocity.mul_(momentum).add_(grad, alpha=-lr)
        if group["nesterov"]:
            param.add_(grad, alpha=-lr).add_(velocity, alpha=momentum)
        else:
            param.add_(velocity)


class Adagrad(KerasOptimizer):
    """Keras' Adagrad: ``a += g^2``; ``w -= lr * g / sqrt(a + eps)`` (torch: sqrt(a) + eps)."""

    state_tensors = staticmethod(lambda node: 1)

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        initial_accumulator_value: float = 0.1,
        eps: float = 1e-7,
        weight_decay: float = 0.0,
    ) -> None:
        defaults = {
            "lr": lr,
            "initial_accumulator_value": initial_accumulator_value,
            "eps": eps,
            "weight_decay": weight_decay,
        }
        super().__init__(params, defaults)

    def init_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        return {"sum": torch.full_like(param, group["initial_accumulator_value"])}

    def update(
        self, param: Tensor, grad: Tensor, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        accumulator = state["sum"]
        accumulator.add_(grad * grad)
        param.sub_((grad * group["lr"]) / (accumulator + group["eps"]).sqrt())


class RMSprop(KerasOptimizer):
    """Keras' RMSprop: ``v = rho*v + (1-rho)*g^2``; step ``lr * g / sqrt(v + eps)``
    (centered: ``v - avg^2 + eps``), through a momentum buffer when ``momentum > 0``.

    ``alpha`` is Keras' ``rho`` (torch's name, so the optimizer file serves both parities).
    """

    state_tensors = staticmethod(
        lambda node: 1 + int(bool(node.get("momentum"))) + int(bool(node.get("centered")))
    )

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        alpha: float = 0.9,
        eps: float = 1e-7,
        momentum: float = 0.0,
        centered: bool = False,
        weight_decay: float = 0.0,
    ) -> None:
        defaults = {
            "lr": lr,
            "alpha": alpha,
            "eps": eps,
            "momentum": momentum,
            "centered": centered,
            "weight_decay": weight_decay,
        }
        super().__init__(params, defaults)

    def init_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        state = {"square_avg": torch.zeros_like(param)}
        if group["momentum"]:
            state["momentum_buffer"] = torch.zeros_like(param)
        if group["centered"]:
            state["grad_avg"] = torch.zeros_like(param)
        return state

    def update(
        self, param: Tensor, grad: Tensor, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        rho = group["alpha"]
        square_avg = state["square_avg"]
        square_avg.mul_(rho).add_(grad * grad, alpha=1 - rho)
        denominator = square_avg + group["eps"]
        if group["centered"]:
            grad_avg = state["grad_avg"]
            grad_avg.mul_(rho).add_(grad, alpha=1 - rho)
            denominator.sub_(grad_avg * grad_avg)
        increment = (grad * group["lr"]) / denominator.sqrt_()
        if group["momentum"]:
            buffer = state.setdefault("momentum_buffer", torch.zeros_like(param))
            buffer.mul_(group["momentum"]).add_(increment)
            param.sub_(buffer)
        else:
            param.sub_(increment)


class Adam(KerasOptimizer):
    """Keras' Adam: ``w -= alpha_t * m / (sqrt(v) + eps)`` with
    ``alpha_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t)``: epsilon before the bias correction
    (torch adds it to ``sqrt(v / (1 - beta2^t))``, a larger step for tiny gradients)."""

    state_tensors = staticmethod(lambda node: 2 + int(bool(node.get("amsgrad"))))

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-7,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
        }
        super().__init__(params, defaults)

    def init_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        state = {"exp_avg": torch.zeros_like(param), "exp_avg_sq": torch.zeros_like(param)}
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = torch.zeros_like(param)
        return state

    def update(
        self, param: Tensor, grad: Tensor, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        beta1, beta2 = group["betas"]
        lr, b1, b2, t = scalars(param, group["lr"], beta1, beta2, state["step"])
        alpha = lr * torch.sqrt(1 - b2**t) / (1 - b1**t)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m.mul_(beta1).add_(grad, alpha=1 - beta1)
        v.mul_(beta2).add_(grad * grad, alpha=1 - beta2)
        if group["amsgrad"]:
            v = state.setdefault("max_exp_avg_sq", torch.zeros_like(param))
            torch.maximum(v, state["exp_avg_sq"], out=v)
        param.sub_((m * alpha) / (v.sqrt() + group["eps"]))


class AdamW(Adam):
    """Keras' AdamW: Adam whose ``weight_decay`` (decoupled, every optimizer here) defaults to
    Keras' 0.004."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-7,
        weight_decay: float = 0.004,
        amsgrad: bool = False,
    ) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad)


class AdamFamily(KerasOptimizer):
    """Adamax and Nadam: Adam's arguments without AMSGrad."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-7,
        weight_decay: float = 0.0,
    ) -> None:
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults)


class Adamax(AdamFamily):
    """Keras' Adamax: ``u = max(beta2*u, |g|)``; ``w -= lr * m / ((1 - beta1^t) * (u + eps))``
    (torch adds epsilon to ``|g|`` inside the maximum)."""

    def init_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        return {"exp_avg": torch.zeros_like(param), "exp_inf": torch.zeros_like(param)}

    def update(
        self, param: Tensor, grad: Tensor, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        beta1, beta2 = group["betas"]
        m, u = state["exp_avg"], state["exp_inf"]
        m.mul_(beta1).add_(grad, alpha=1 - beta1)
        torch.maximum(u.mul_(beta2), grad.abs(), out=u)
        lr, b1, t = scalars(param, group["lr"], beta1, state["step"])
        param.sub_((m * lr) / ((u + group["eps"]) * (1 - b1**t)))


class NAdam(AdamFamily):
    """Keras 3's Nadam: Adam with Nesterov momentum whose factor ``mu_t = beta1 * (1 - 0.5 *
    0.96^t)`` reaches beta1 within a few hundred steps (torch and Keras 2: ``0.96^(0.004 t)``,
    thousands of steps); epsilon after the bias correction, as torch."""

    def init_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        return {
            "mu_product": 1.0,
            "exp_avg": torch.zeros_like(param),
            "exp_avg_sq": torch.zeros_like(param),
        }

    def update(
        self, param: Tensor, grad: Tensor, state: dict[str, Any], group: dict[str, Any]
    ) -> None:
        beta1, beta2 = group["betas"]
        lr, b1, b2, t, decay, product = scalars(
            param, group["lr"], beta1, beta2, state["step"], 0.96, state["mu_product"]
        )
        mu = b1 * (1 - 0.5 * decay**t)
        mu_next = b1 * (1 - 0.5 * decay ** (t + 1))
        product = product * mu
        state["mu_product"] = product.item()  # a plain number in the state
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m.mul_(beta1).add_(grad, alpha=1 - beta1)
        v.mul_(beta2).add_(grad * grad, alpha=1 - beta2)
        m_hat = (m * mu_next) / (1 - product * mu_next) + (grad * (1 - mu)) / (1 - product)
        v_hat = v / (1 - b2**t)
        param.sub_((m_hat * lr) / (v_hat.sqrt() + group["eps"]))
