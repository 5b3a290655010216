"""Write an experiment's dataset to an `.npz` (`x`, `y`, `x_test`, `y_test`): the format that
`data.name=npz` trains on and `scripts/infer.py` predicts from.

  python scripts/export_dataset.py --config experiments/mnist1d_cnn.py --out runs/data/mnist1d.npz

Classification data only (a language model's token windows are neither). An existing `.npz` at
--out is replaced, atomically; nothing is written when anything fails.
"""

from __future__ import annotations

import argparse


def main() -> int:
  from research.cli import ArgumentParser, parse_with_overrides
  from research.config import load_config

  parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default="experiments/mnist1d_cnn.py")
  parser.add_argument("--out", required=True, help="destination .npz")
  args, overrides = parse_with_overrides(parser)
  config = load_config(args.config, overrides)

  from research.data import DataError, load_dataset
  from research.outputs import check_output_file, write_npz
  from research.serving.run_kind import run_kind

  data_path = config.data.get("path", "") if config.data.name == "npz" else ""
  check_output_file(args.out, "--out", (".npz",), inputs=[("--config.data.path", data_path)])
  if run_kind(config) == "language_model":
    raise DataError(
      f"{args.config} is a language model ({config.data.name} tokens); export_dataset.py writes "
      f"classification data (x, y, x_test, y_test) for data.name=npz and scripts/infer.py"
    )
  data = load_dataset(config.data)
  write_npz(args.out, x=data.x_train, y=data.y_train, x_test=data.x_test, y_test=data.y_test)
  print(
    f"{data.name}: {len(data.x_train)} train, {len(data.x_test)} test, input "
    f"{list(data.input_shape)}, {data.num_classes} classes -> {args.out}"
  )
  return 0


if __name__ == "__main__":
  from research.cli import run_main

  run_main(main)
