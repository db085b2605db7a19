"""Classic 2-D optimisation test functions: Rosenbrock, Beale, Himmelblau, Rastrigin, ...

Each task minimises one function (static, part of the spec) from a sampled start point (traced),
optionally with Gaussian gradient noise drawn from the loss key. Every function is shifted so
its global minimum is 0 and scaled so losses at the start are O(1)-O(100). Start points are
drawn from a per-function box, away from the global minimum and from any local minimum that
is about as low as the start, so a plain optimiser can always make progress.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lopt.tasks.base import SPLITS, TaskFamily, TaskParts, TaskSpec, choice, log_uniform, round_sig
from lopt.tasks.families.quadratic import gradient_noise

#: Smallest scaled loss a start point may have (keeps the relative progress measurable).
MIN_START_LOSS = 0.5
#: A start point is rejected when a non-global local minimum within this distance has a
#: value above ``start_loss / LOCAL_MIN_RATIO`` (the optimiser could just settle there).
LOCAL_MIN_RADIUS = 1.5
LOCAL_MIN_RATIO = 1.3
#: Probability that a task has no gradient noise; otherwise the relative noise scale is drawn
#: log-uniformly from ``NOISE_RANGE``.
P_NOISELESS = 0.5
NOISE_RANGE = (0.01, 0.5)


class TestFunctionDef(NamedTuple):
    """One test function: ``fn(x, y, m)`` works with ``m`` = ``numpy`` or ``jax.numpy``."""

    fn: Callable
    f_min: float  # the global minimum value, subtracted so the loss is 0 there
    scale: float  # multiplies the shifted function
    box: tuple  # ((x_low, x_high), (y_low, y_high)) for start points
    global_minima: tuple  # points where the shifted function is 0
    local_minima: tuple = ()  # other local minima


TestFunctionDef.__test__ = False  # not a pytest test class despite the name


def _rosenbrock(x, y, m):
    return (1 - x) ** 2 + 100 * (y - x ** 2) ** 2


def _beale(x, y, m):
    return ((1.5 - x + x * y) ** 2 + (2.25 - x + x * y ** 2) ** 2
            + (2.625 - x + x * y ** 3) ** 2)


def _booth(x, y, m):
    return (x + 2 * y - 7) ** 2 + (2 * x + y - 5) ** 2


def _himmelblau(x, y, m):
    return (x ** 2 + y - 11) ** 2 + (x + y ** 2 - 7) ** 2


def _rastrigin(x, y, m):
    return 20 + x ** 2 - 10 * m.cos(2 * math.pi * x) + y ** 2 - 10 * m.cos(2 * math.pi * y)


def _six_hump_camel(x, y, m):
    return (4 - 2.1 * x ** 2 + x ** 4 / 3) * x ** 2 + x * y + (-4 + 4 * y ** 2) * y ** 2


def _styblinski_tang(x, y, m):
    return 0.5 * (x ** 4 - 16 * x ** 2 + 5 * x + y ** 4 - 16 * y ** 2 + 5 * y)


def _matyas(x, y, m):
    return 0.26 * (x ** 2 + y ** 2) - 0.48 * x * y


def _three_hump_camel(x, y, m):
    return 2 * x ** 2 - 1.05 * x ** 4 + x ** 6 / 6 + x * y + y ** 2


def _rastrigin_minima_1d(k_max: int = 4) -> list:
    """Local minima of ``x^2 + 10 (1 - cos 2 pi x)``, one near each integer, by Newton's method."""
    out = []
    for k in range(-k_max, k_max + 1):
        x = float(k)
        for _ in range(20):
            grad = 2 * x + 20 * math.pi * math.sin(2 * math.pi * x)
            curv = 2 + 40 * math.pi ** 2 * math.cos(2 * math.pi * x)
            x -= grad / curv
        out.append(x)
    return out


_R1 = _rastrigin_minima_1d()
_ST = (-2.903534027771178, 2.746802732717241)  # 1-D minima of Styblinski-Tang

FUNCTIONS = {
    "rosenbrock": TestFunctionDef(_rosenbrock, 0.0, 0.05, ((-2.0, 2.0), (-1.0, 3.0)),
                                  ((1.0, 1.0),)),
    "beale": TestFunctionDef(_beale, 0.0, 0.2, ((-2.0, 4.5), (-1.5, 1.5)), ((3.0, 0.5),)),
    "booth": TestFunctionDef(_booth, 0.0, 0.25, ((-4.0, 6.0), (-2.0, 8.0)), ((1.0, 3.0),)),
    "himmelblau": TestFunctionDef(
        _himmelblau, 0.0, 0.2, ((-5.0, 5.0), (-5.0, 5.0)),
        ((3.0, 2.0), (-2.805118086952745, 3.131312518250573),
         (-3.779310253377747, -3.283185991286170), (3.584428340330492, -1.848126526964404))),
    "rastrigin": TestFunctionDef(
        _rastrigin, 0.0, 1.0, ((-3.5, 3.5), (-3.5, 3.5)), ((0.0, 0.0),),
        tuple((a, b) for a in _R1 for b in _R1 if (a, b) != (0.0, 0.0))),
    "six_hump_camel": TestFunctionDef(
        _six_hump_camel, -1.031628453489877, 1.0, ((-2.5, 2.5), (-1.5, 1.5)),
        ((0.08984201368301331, -0.7126564032704135), (-0.08984201368301331, 0.7126564032704135)),
        ((-1.703606714, 0.796083568), (1.703606714, -0.796083568),
         (-1.607104753, -0.568651455), (1.607104753, 0.568651455))),
    "styblinski_tang": TestFunctionDef(
        _styblinski_tang, 2 * _styblinski_tang(_ST[0], 0.0, math), 0.5,
        ((-5.0, 5.0), (-5.0, 5.0)), ((_ST[0], _ST[0]),),
        ((_ST[0], _ST[1]), (_ST[1], _ST[0]), (_ST[1], _ST[1]))),
    "matyas": TestFunctionDef(_matyas, 0.0, 1.0, ((-10.0, 10.0), (-10.0, 10.0)), ((0.0, 0.0),)),
    "three_hump_camel": TestFunctionDef(
        _three_hump_camel, 0.0, 1.0, ((-2.5, 2.5), (-2.5, 2.5)), ((0.0, 0.0),),
        ((1.747552, -0.873776), (-1.747552, 0.873776))),
}


def shifted(name: str, x, y, m=jnp):
    """The task's loss without noise: ``scale * (f(x, y) - f_min)``, 0 at the global minimum."""
    d = FUNCTIONS[name]
    return d.scale * (d.fn(x, y, m) - d.f_min)


def start_is_valid(name: str, x: float, y: float) -> bool:
    """Whether ``(x, y)`` is a usable start: not (nearly) at the global minimum and not where
    the optimiser could settle in a nearby local minimum almost as high as the start."""
    value = float(shifted(name, x, y, np))
    if value < MIN_START_LOSS:
        return False
    for mx, my in FUNCTIONS[name].local_minima:
        near = math.hypot(x - mx, y - my) < LOCAL_MIN_RADIUS
        if near and value < LOCAL_MIN_RATIO * float(shifted(name, mx, my, np)):
            return False
    return True


def sample_start(name: str, rng: np.random.Generator) -> list:
    """A uniform start point in the function's box, rejection-sampled with ``start_is_valid``."""
    (xl, xh), (yl, yh) = FUNCTIONS[name].box
    for _ in range(10_000):
        x, y = float(rng.uniform(xl, xh)), float(rng.uniform(yl, yh))
        if start_is_valid(name, x, y):
            return [round_sig(x, 6), round_sig(y, 6)]
    raise RuntimeError(f"no valid start point found for {name!r}")  # pragma: no cover


@dataclasses.dataclass(frozen=True)
class TestFunctionSpec(TaskSpec):
    """Minimise the 2-D test function ``function``; parameters are ``{"xy": [x, y]}``."""

    __test__ = False

    function: str
    batch_size: int = 1  # no data: batches are empty

    def init(self, hp, key):
        del key  # the start point is part of the task
        return {"xy": jnp.stack([hp["start_x"], hp["start_y"]])}

    def loss(self, hp, params, batch, key):
        xy = params["xy"]
        value = shifted(self.function, xy[0], xy[1])
        return value + gradient_noise(xy, hp["noise_std"], key)


class TestFunction(TaskFamily):
    name = "test_function"
    description = "Classic 2-D test functions (Rosenbrock, Beale, ...) from sampled start points."
    space = {
        "function": tuple(FUNCTIONS),
        "start": "uniform in a per-function box, away from the minimum and shallow local minima",
        "noise_scale": f"0 with probability {P_NOISELESS}, else log-uniform {list(NOISE_RANGE)}; "
                       "gradient-noise std relative to the gradient norm at the start",
    }
    __test__ = False

    def sample_config(self, rng):
        name = choice(rng, tuple(FUNCTIONS))
        noise = 0.0 if rng.uniform() < P_NOISELESS else round_sig(log_uniform(rng, *NOISE_RANGE), 3)
        return {"function": name, "start": sample_start(name, rng), "noise_scale": noise}

    def build(self, config):
        name = config["function"]
        if name not in FUNCTIONS:
            raise ValueError(f"unknown test function {name!r}; allowed: {', '.join(FUNCTIONS)}")
        x, y = (float(v) for v in config["start"])
        grad = jax.grad(lambda p: shifted(name, p[0], p[1]))(jnp.array([x, y], jnp.float32))
        noise_std = float(config["noise_scale"]) * float(jnp.linalg.norm(grad))
        hp = {"start_x": x, "start_y": y, "noise_std": noise_std}
        return TaskParts(TestFunctionSpec(name), hp, {s: None for s in SPLITS})
