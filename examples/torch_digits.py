"""Train a small PyTorch MLP on scikit-learn's digits with lopt's learned optimizer and with
AdamW, and print both runs' losses.

    pip install 'lopt[torch]'
    python examples/torch_digits.py [--steps 1000]

The learned optimizer needs no learning rate; it reads the training loss at every step and a
validation loss every ten steps.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

import lopt.torch


def data(seed=0):
    """Standardised digits split into train (1200), validation (200) and test (397)."""
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(x))
    x = torch.tensor(x[order], dtype=torch.float32)
    y = torch.tensor(y[order])
    x = (x - x[:1200].mean(0)) / (x[:1200].std(0) + 1e-6)
    return (x[:1200], y[:1200]), (x[1200:1400], y[1200:1400]), (x[1400:], y[1400:])


def model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(),
                               torch.nn.Linear(128, 10))


def train(make_optimizer, steps, batch=128, seed=0):
    (xt, yt), (xv, yv), (xs, ys) = data()
    net = model(seed)
    opt = make_optimizer(net.parameters())
    learned = isinstance(opt, lopt.torch.LearnedOptimizer)
    gen = torch.Generator().manual_seed(seed)
    curve = []
    for step in range(steps):
        idx = torch.randint(0, len(xt), (batch,), generator=gen)

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(net(xt[idx]), yt[idx])
            loss.backward()
            return loss

        if learned and step % 10 == 0:
            with torch.no_grad():
                opt.set_valid_loss(F.cross_entropy(net(xv), yv))
        curve.append(opt.step(closure).item())
    with torch.no_grad():
        train_loss = F.cross_entropy(net(xt), yt).item()
        test_loss = F.cross_entropy(net(xs), ys).item()
        accuracy = (net(xs).argmax(1) == ys).float().mean().item()
    return curve, train_loss, test_loss, accuracy


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = {"lopt.torch (shipped)": lambda p: lopt.torch.LearnedOptimizer(p),
            "AdamW lr=1e-3": lambda p: torch.optim.AdamW(p, lr=1e-3)}
    print(f"digits MLP 64-128-10, batch 128, {args.steps} steps")
    print(f"{'optimizer':22s} {'first':>7s} {'last 50':>8s} {'train':>7s} {'test':>7s} "
          f"{'test acc':>8s} {'seconds':>8s}")
    for name, make in runs.items():
        start = time.perf_counter()
        curve, train_loss, test_loss, accuracy = train(make, args.steps)
        print(f"{name:22s} {curve[0]:7.3f} {np.mean(curve[-50:]):8.4f} {train_loss:7.4f} "
              f"{test_loss:7.4f} {accuracy:8.3f} {time.perf_counter() - start:8.1f}")


if __name__ == "__main__":
    main()
