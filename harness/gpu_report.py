"""Markdown tables of a ``scripts/gpu_check.py`` report (its JSON), for the terminal and for
``docs/gpu.md`` (``scripts/docs_tables.py render`` fills ``<!-- gpu: FILE -->`` blocks).

Derived numbers are computed here from the raw measurements the report keeps: a steady
epoch is the median of the epochs after the first (which pays for start-up: cuDNN's
algorithm search, allocator growth, lazy initialisation), or the first when it is the only
one; 200 of them are the paper's run length (RL-AUX appendix C: 200 epochs; "each
experiment took between 12-36 hours" on 2080 Ti GPUs).
"""

from __future__ import annotations

import statistics
from typing import Any

from harness.compare import markdown_table

PAPER_EPOCHS = 200
PAPER_HOURS = "12-36"
FULL_TRAIN = 45_000  # CIFAR-100's 50,000 training images less the 10% validation split


def steady_seconds(epoch_seconds: list[float]) -> float:
    """Seconds of a typical epoch: the median of those after the first, else the first."""
    later = epoch_seconds[1:] or epoch_seconds[:1]
    return statistics.median(later)


def _skipped(section: Any) -> str | None:
    """Why a section or run has no measurements: skipped, the error it raised, or the check
    was killed while it ran (its ``running`` marker is all it left)."""
    if not isinstance(section, dict):
        return None
    if "running" in section:
        return f"killed while running ({section['running']})"
    return section.get("skipped") or section.get("error")


def format_gpu_report(report: dict[str, Any]) -> str:
    """The report's sections as markdown: device, protocol timings, batched vector form,
    precision options and the ids stepped on the device."""
    device = report["device"]
    name = device.get("device", "no CUDA device (CPU)")
    lines = [
        f"Device: {name}; torch {device['torch']}"
        + (f", CUDA {device['cuda_version']}, bfloat16 {device['bf16']}" if device["cuda"] else "")
        + (
            f", TF32 convolutions {device['tf32_convolutions']}, matmuls {device['tf32_matmuls']}"
            if "tf32_convolutions" in device
            else ""
        )
        + f". Budget {report.get('budget_s', 0):.0f} s, used {report.get('elapsed_s', 0):.0f} s.",
        "",
    ]
    data = report.get("data")
    if data:
        kind = (
            f"tiled to full size from {data['tiled_from']} real images (timings only)"
            if data.get("tiled_from")
            else "as given"
        )
        lines += [f"Protocol data: {data['train_images']} training images, {kind}.", ""]

    protocol = report.get("protocol", {})
    if _skipped(protocol):
        lines += [f"Protocol timings: skipped ({_skipped(protocol)}).", ""]
    elif protocol:
        # Hours for the paper's run only from the paper's training set (45,000 images).
        full = bool(data) and data.get("train_images") == FULL_TRAIN
        rows = []
        order = {m: i for i, m in enumerate(("stl", "human", "maxl", "ppo"))}
        for method, run in sorted(protocol.items(), key=lambda item: order.get(item[0], 9)):
            if _skipped(run):
                rows.append([method, "-", "-", "-", "-", "-", _skipped(run)])
                continue
            unit = "cycle" if method == "ppo" else "epoch"
            seconds = run["epoch_seconds"]
            steady = steady_seconds(seconds)
            hours = f"{PAPER_EPOCHS * steady / 3600:.2f}"
            if len(seconds) == 1:  # the first epoch pays for start-up: an upper bound
                hours = f"<= {hours}"
            notes = []
            stl = protocol.get("stl", {}).get("epoch_seconds")
            if method == "ppo" and stl:  # the cycle against the two plain epochs it replaces
                notes.append(f"cycle / two stl epochs {steady / (2 * steady_seconds(stl)):.2f}")
            if run.get("split"):
                split = ", ".join(f"{k} {v:.1f} s" for k, v in run["split"].items())
                notes.append(f"{split} per cycle")
            if run.get("agent_backbone"):
                notes.append(f"agent backbone {run['agent_backbone']}")
            if run.get("cudnn_deterministic"):
                notes.append("cuDNN deterministic (SB3's seeding sets it)")
            if run.get("stopped"):
                notes.append(run["stopped"])
            evaluation = run.get("eval_seconds")
            rows.append(
                [
                    method,
                    f"{len(seconds)} {unit}{'s' if len(seconds) > 1 else ''}",
                    f"{seconds[0]:.1f}",
                    f"{steady:.1f}" if len(seconds) > 1 else "-",
                    "-" if evaluation is None else f"{evaluation:.1f}",
                    hours if full else "-",
                    "; ".join(notes),
                ]
            )
        header = [
            "method",
            "ran",
            "first (s)",
            "steady (s)",
            "val + test eval (s)",
            f"{PAPER_EPOCHS} at steady rate (h)",
            "notes",
        ]
        lines += markdown_table(header, rows)
        lines += [
            "",
            f"The paper reports {PAPER_HOURS} h per {PAPER_EPOCHS}-epoch experiment "
            "(2080 Ti GPUs). Hours here count training alone, at the full "
            f"{FULL_TRAIN:,}-image training set only; add one evaluation per `eval_every` "
            "epochs. A PPO cycle's rollout holds the env steps, which train the main "
            "network's copy on every batch.",
            "",
        ]

    batched = report.get("batched_vector", {})
    if _skipped(batched):
        lines += [f"Batched vector form: skipped ({_skipped(batched)}).", ""]
    elif batched:
        rows = []
        for env_id, run in batched.items():
            if _skipped(run):
                rows.append([env_id, "-", "-", "-", "-", _skipped(run)])
                continue
            rates = sorted(run["steps_per_s"].items(), key=lambda item: int(item[0]))
            rows.append(
                [
                    env_id,
                    run["where"],
                    f"{run['max_rel_diff_obs']:.1e}",
                    f"{run['max_rel_diff_reward']:.1e}",
                    f"{run['single_steps_per_s']:.0f}",
                    ", ".join(f"K={k}: {v:.0f}" for k, v in rates),
                ]
            )
        header = [
            "id",
            "device",
            "slot vs single env, TF32 off: obs (max diff / max)",
            "reward",
            "single env steps/s",
            "batched env steps/s",
        ]
        lines += markdown_table(header, rows) + [""]

    precision = report.get("precision", {})
    if _skipped(precision):
        lines += [f"Precision options: skipped ({_skipped(precision)}).", ""]
    elif precision:
        rows = []
        for name, run in precision.items():
            if _skipped(run):
                rows.append([name, "-", "-", "-", _skipped(run)])
                continue
            accuracy = run.get("test_accuracy")  # none when it was stopped for time
            rows.append(
                [
                    name,
                    str(len(run["epoch_seconds"])),
                    f"{steady_seconds(run['epoch_seconds']):.2f}",
                    "-" if accuracy is None else f"{100 * accuracy:.2f}",
                    run.get("stopped", ""),
                ]
            )
        header = ["options", "epochs", "steady epoch (s)", "test accuracy (%)", "notes"]
        lines += markdown_table(header, rows)
        lines += [""]

    ids = report.get("ids", {})
    if _skipped(ids):
        lines += [f"Every id stepped: skipped ({_skipped(ids)}).", ""]
    elif ids:
        rows = [[k, v] for k, v in ids.items()]
        lines += markdown_table(["id", "reset and three random steps"], rows)
        lines += [""]
    errors = report.get("errors", {})
    for section, reason in errors.items():
        lines += [f"{section} stopped early: {reason}.", ""]
    return "\n".join(lines).rstrip() + "\n"
