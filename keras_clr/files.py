"""The range test's record exported: a DataFrame, and CSV and JSON files
that round-trip exactly.

`LRFinderResult.to_frame`, `to_csv` / `read_csv` and `to_json` / `read_json`
call these functions. Floats are written with `repr`, so every float64 comes
back bit for bit; a NaN keeps its sign and payload. A file that is not one of
these, or is damaged or truncated, raises a ValueError that says what is
wrong. No pickle.

In a multi-process training (JAX after `jax.distributed.initialize`) every
process holds the same result, and the writers write on process 0 only; the
other processes return without touching the file, so that processes sharing
a directory do not write the same file at once.
"""

import csv
import io
import json
import os

import numpy as np

from keras_clr import _backend

FORMAT = "keras_clr.LRFinderResult"
VERSION = 1
_NAN_BITS = 0x7FF8000000000000
_SIGN_BIT = 0x8000000000000000


_NONFINITE = ("nonfinite_variable", "nonfinite_step", "nonfinite_lr")


def metadata(result):
    """An `LRFinderResult`'s settings: its constructor's keyword arguments
    other than the arrays, as a dict."""
    return {
        "num_steps": result.num_steps,
        "smoothing": result.smoothing,
        "stop_reason": result.stop_reason,
        "monitor": result.monitor,
        "mode": result.mode,
        "start_lr": result.start_lr,
        "end_lr": result.end_lr,
        "weight_decay": result.weight_decay,
        "momentum": result.momentum,
        "batch_norm": result.batch_norm,
        "nonfinite_variable": result.nonfinite_variable,
        "nonfinite_step": result.nonfinite_step,
        "nonfinite_lr": result.nonfinite_lr,
    }


def _saved_metadata(result):
    """`metadata` as files hold it: the non-finite variable's entries only
    for a test that stopped on one, so other files read as before."""
    meta = metadata(result)
    if result.nonfinite_variable is None:
        for key in _NONFINITE:
            del meta[key]
    return meta


def columns(result):
    """An `LRFinderResult`'s arrays by column name: lr, loss, smoothed_loss,
    one per metric, and loss_low / loss_high when there is a band."""
    out = {"lr": result.lrs, "loss": result.losses, "smoothed_loss": result.smoothed_losses}
    out.update(result.metrics)
    if result.loss_band is not None:
        out["loss_low"], out["loss_high"] = result.loss_band
    return out


def to_frame(result):
    """A pandas DataFrame: a step column, then `columns(result)`, copied."""
    import pandas as pd

    frame = pd.DataFrame({"step": result.steps.copy()})
    for name, values in columns(result).items():
        frame[name] = values.copy()
    return frame


def write_csv(result, path):
    """Writes an `LRFinderResult` to `path` as its `to_csv` describes, on
    process 0 only (see the module docstring)."""
    if _backend.process_index() != 0:
        return
    named = columns(result)
    meta = dict(
        _saved_metadata(result),
        metrics=list(result.metrics),
        loss_band=result.loss_band is not None,
        rows=len(result.lrs),
    )
    out = io.StringIO()
    out.write(f"# {FORMAT} v{VERSION}\n")
    for key, value in meta.items():
        out.write(f"# {key}={json.dumps(value)}\n")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["step", *named])
    cells = [_encode(values) for values in named.values()]
    for step, row in zip(result.steps.tolist(), zip(*cells)):
        writer.writerow([step, *row])
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(out.getvalue())


def read_csv(cls, path):
    """A `cls` (an `LRFinderResult`) from a CSV `write_csv` wrote."""
    text = _read_text(path)
    lines = text.splitlines(keepends=True)
    if not lines or lines[0].rstrip("\r\n") != f"# {FORMAT} v{VERSION}":
        _bad(
            path,
            "not a CSV written by `LRFinderResult.to_csv`: its first line "
            f"must be '# {FORMAT} v{VERSION}'",
        )
    if not text.endswith("\n"):
        _bad(path, "the file ends in the middle of a line (truncated file?)")
    meta, i = {}, 1
    while i < len(lines) and lines[i].startswith("#"):
        key, _, value = lines[i][1:].strip().partition("=")
        try:
            meta[key.strip()] = json.loads(value)
        except ValueError:
            _bad(path, f"line {i + 1} is not a '# key=json-value' metadata line")
        i += 1
    _need(path, meta, ("rows", "metrics", "loss_band"))
    if (
        not isinstance(meta["rows"], int)
        or not isinstance(meta["loss_band"], bool)
        or not isinstance(meta["metrics"], list)
        or not all(isinstance(name, str) for name in meta["metrics"])
    ):
        _bad(path, "the metadata 'rows', 'metrics' or 'loss_band' has the wrong type")
    expected = ["step", "lr", "loss", "smoothed_loss", *meta["metrics"]]
    expected += ["loss_low", "loss_high"] if meta["loss_band"] else []
    rows = [row for row in csv.reader(io.StringIO("".join(lines[i:]))) if row]
    if not rows or rows[0] != expected:
        _bad(path, f"the columns must be {expected}; found {rows[0] if rows else 'none'}")
    rows = rows[1:]
    if len(rows) != meta["rows"]:
        _bad(
            path, f"{len(rows)} data rows where the metadata says {meta['rows']} (truncated file?)"
        )
    table = np.empty((len(expected), len(rows)))
    steps = []
    for r, row in enumerate(rows):
        where = f"line {i + 2 + r}"
        if len(row) != len(expected):
            _bad(path, f"{where} has {len(row)} cells, expected {len(expected)}")
        if not row[0].isdigit() or (steps and int(row[0]) <= steps[-1]):
            _bad(
                path,
                f"{where}: the step must be an integer above the previous one, found {row[0]!r}",
            )
        steps.append(int(row[0]))
        for c, cell in enumerate(row[1:], start=1):
            table[c, r] = _decode_cell(path, cell, f"{where}, column {expected[c]!r}")
    arrays = dict(zip(expected, table))
    return _build(
        cls,
        path,
        meta,
        arrays["lr"],
        arrays["loss"],
        arrays["smoothed_loss"],
        {name: arrays[name] for name in meta["metrics"]},
        (arrays["loss_low"], arrays["loss_high"]) if meta["loss_band"] else None,
        steps,
    )


def write_json(result, path):
    """Writes an `LRFinderResult` to `path` as its `to_json` describes, on
    process 0 only (see the module docstring)."""
    if _backend.process_index() != 0:
        return
    data = {
        "format": FORMAT,
        "version": VERSION,
        **_saved_metadata(result),
        "steps": result.steps.tolist(),
        "lrs": _encode_list(result.lrs),
        "losses": _encode_list(result.losses),
        "smoothed_losses": _encode_list(result.smoothed_losses),
        "metrics": {k: _encode_list(v) for k, v in result.metrics.items()},
        "loss_band": (
            None if result.loss_band is None else [_encode_list(v) for v in result.loss_band]
        ),
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, allow_nan=False)


def read_json(cls, path):
    """A `cls` (an `LRFinderResult`) from a JSON file `write_json` wrote."""
    try:
        data = json.loads(_read_text(path))
    except (ValueError, RecursionError) as e:
        _bad(path, f"not valid JSON, truncated or not JSON at all ({e})")
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        _bad(
            path,
            "not a JSON file written by `LRFinderResult.to_json`: it has "
            f'no "format": "{FORMAT}" tag',
        )
    if data.get("version") != VERSION:
        _bad(path, f"unsupported version {data.get('version')!r} (this reads {VERSION})")
    _need(path, data, ("lrs", "losses", "smoothed_losses", "metrics", "loss_band"))
    band, metrics = data["loss_band"], data["metrics"]
    if not isinstance(metrics, dict) or not (band is None or isinstance(band, list)):
        _bad(path, '"metrics" must be an object and "loss_band" a list or null')
    steps = data.get("steps")  # files written before it was recorded: one per step
    if steps is not None and not (
        isinstance(steps, list)
        and all(isinstance(v, int) and not isinstance(v, bool) for v in steps)
    ):
        _bad(path, '"steps" must be a list of integers')
    return _build(
        cls,
        path,
        data,
        *(_decode_list(path, data[k], k) for k in ("lrs", "losses", "smoothed_losses")),
        {k: _decode_list(path, v, f"metrics.{k}") for k, v in metrics.items()},
        None if band is None else [_decode_list(path, v, "loss_band") for v in band],
        steps,
    )


def _bad(path, what):
    raise ValueError(f"Cannot read an LR range test from {os.fspath(path)!r}: {what}.")


def _read_text(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError:
        _bad(path, "not UTF-8 text")


def _need(path, meta, keys):
    for key in keys:
        if key not in meta:
            _bad(path, f"the entry {key!r} is missing")


def _build(cls, path, meta, lrs, losses, smoothed, metrics, band, steps=None):
    keys = (
        "num_steps",
        "smoothing",
        "stop_reason",
        "monitor",
        "mode",
        "start_lr",
        "end_lr",
        "weight_decay",
    )
    _need(path, meta, keys)
    try:
        return cls(
            lrs,
            losses,
            smoothed,
            metrics=metrics,
            loss_band=band,
            steps=steps,
            momentum=meta.get("momentum"),
            batch_norm=meta.get("batch_norm", False),
            **{key: meta.get(key) for key in _NONFINITE},
            **{key: meta[key] for key in keys},
        )
    except (TypeError, ValueError) as e:
        _bad(path, str(e).rstrip("."))


def _encode(values):
    """Cells for a float64 array: repr for finite values; NaNs keep their bits."""
    bits = values.view(np.uint64)
    cells = []
    for value, b in zip(values.tolist(), bits.tolist()):
        if value == value:
            cells.append(repr(value))  # finite, inf, -inf
        elif b & ~_SIGN_BIT == _NAN_BITS:
            cells.append("-nan" if b & _SIGN_BIT else "nan")
        else:
            cells.append(f"nan:{b:016x}")
    return cells


def _encode_list(values):
    return [v if np.isfinite(v) else cell for v, cell in zip(values.tolist(), _encode(values))]


def _decode_cell(path, cell, where):
    try:
        if cell.startswith("nan:"):
            return np.array(int(cell[4:], 16), dtype=np.uint64).view(np.float64)
        return float(cell)
    except (ValueError, OverflowError):
        _bad(path, f"{where}: {cell!r} is not a number")


def _decode_list(path, values, name):
    if not isinstance(values, list):
        _bad(path, f"{name!r} must be a list of numbers")
    out = np.empty(len(values))
    for i, value in enumerate(values):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                out[i] = value
            except OverflowError:
                _bad(path, f"{name}[{i}] = {value!r} does not fit a float64")
        elif isinstance(value, str) and (
            value in ("inf", "-inf", "nan", "-nan") or value.startswith("nan:")
        ):
            out[i] = _decode_cell(path, value, f"{name}[{i}]")
        else:
            _bad(path, f"{name}[{i}] = {value!r} is not a number")
    return out
