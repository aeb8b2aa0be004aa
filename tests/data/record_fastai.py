"""Records fastai's `valley`, `slide`, `minimum` and `steep` suggestions.

Writes `fastai_suggestions.json` beside this file: for each loss curve of
`tests/test_results.py` (`CURVES`) with a point per step and a loss to
minimise, the window fastai's `Learner.lr_find` hands its suggestion
functions (the smoothed losses `[num_it // 10 : -5]`, cut at the first NaN)
and what each of `fastai.callback.schedule`'s functions returns on it, in
float64. `TestAgainstFastai` in `tests/test_results.py` compares keras_clr's
suggestions with them.

fastai needs torch, and keras_clr needs Keras, so the script runs in two
interpreters: this one (the project's, which builds the curves) and one
with fastai, given as `--fastai-python` (run there as `--fastai-only`, it
reads the windows on stdin and prints the suggestions):

    python -m venv /tmp/fastai
    /tmp/fastai/bin/pip install torch==2.13.0 fastai==2.8.12
    .venv/bin/python tests/data/record_fastai.py --fastai-python /tmp/fastai/bin/python

(torch 2.13.0 is the CPU wheel on the project's machines; an unpinned
torch pulls gigabytes of CUDA libraries.)
"""

import argparse
import json
import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
OUTPUT = HERE / "fastai_suggestions.json"
METHODS = ("valley", "slide", "minimum", "steep")


def windows():
    """{curve: {num_steps, lrs, losses}}: the windows fastai's rules see."""
    import os

    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path[:0] = [str(HERE.parent), str(HERE.parents[1])]
    import test_results

    cases = {}
    for name in sorted(test_results.CURVES):
        result = test_results.CURVES[name]()
        steps = result.steps.tolist()
        if result.mode != "min" or any(b - a != 1 for a, b in zip(steps, steps[1:])):
            continue  # fastai has no curve to maximise, nor points steps apart
        lrs, losses = test_results.ref_window(
            result.lrs.tolist(), result.smoothed_losses.tolist(), result.num_steps
        )
        if len(losses) >= 2:  # fastai's rules index past one point
            cases[name] = {"num_steps": result.num_steps, "lrs": lrs, "losses": losses}
    return cases


def fastai_suggestions(cases):
    """{curve: {method: value, or None where fastai raises}} and the versions."""
    import fastai
    import torch
    from fastai.callback import schedule

    out = {}
    for name, case in cases.items():
        lrs = torch.tensor(case["lrs"], dtype=torch.float64)
        losses = torch.tensor(case["losses"], dtype=torch.float64)
        out[name] = {}
        for method in METHODS:
            try:
                value = getattr(schedule, method)(lrs, losses, case["num_steps"])[0]
            except (IndexError, RuntimeError):  # too few points for the rule
                value = None
            out[name][method] = None if value is None else float(value)
    return out, {"fastai": fastai.__version__, "torch": torch.__version__.split("+")[0]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--fastai-python",
        default=sys.executable,
        help="an interpreter with fastai and torch (default: this one)",
    )
    parser.add_argument(
        "--fastai-only",
        action="store_true",
        help="read the windows on stdin, print fastai's suggestions",
    )
    args = parser.parse_args()
    if args.fastai_only:
        suggestions, versions = fastai_suggestions(json.load(sys.stdin))
        json.dump({"suggestions": suggestions, "versions": versions}, sys.stdout)
        return
    cases = windows()
    run = subprocess.run(
        [args.fastai_python, __file__, "--fastai-only"],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        check=True,
    )
    answer = json.loads(run.stdout)
    for name, case in cases.items():
        case.update(answer["suggestions"][name])
    lines = [f" {json.dumps(name)}: {json.dumps(case)}" for name, case in cases.items()]
    OUTPUT.write_text(
        f'{{"versions": {json.dumps(answer["versions"])},\n"cases": {{\n'
        + ",\n".join(lines)
        + "\n}}\n"
    )
    print(f"wrote {OUTPUT} ({len(cases)} curves, fastai {answer['versions']['fastai']})")


if __name__ == "__main__":
    main()
