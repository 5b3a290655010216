"""The scaling grid: what the issue asks of it, every run's config valid, bad grids refused."""

import pytest

from research import config as config_lib
from research.studies.scaling import ScalingError, grid
from research.training import sweep


def test_the_full_grid_spans_what_the_study_needs():
  p = grid.PRESETS["full"]
  params = sorted(s.params for s in p.sizes)
  tokens = sorted(s * p.tokens_per_step for s in p.budget_steps)
  assert len(params) >= 6 and params[-1] / params[0] >= 30
  assert len(tokens) >= 5 and tokens[-1] / tokens[0] >= 30
  assert tokens[-1] / params[0] >= 200  # tokens per parameter for the smallest model
  runs = grid.grid_runs(p)
  assert len(runs) == len(params) * len(tokens) and len({r.name for r in runs}) == len(runs)


@pytest.mark.parametrize("preset", ["full", "tiny"])
def test_every_run_config_loads_with_its_own_schedule_and_labels(preset):
  p = grid.PRESETS[preset]
  for run in grid.grid_runs(p):
    c = config_lib.load_config(p.spec, run.overrides)
    assert c.optimizer.schedule == "cosine" and c.optimizer.decay_steps == 0  # to its own end
    assert c.num_steps % c.eval_every == 0 and c.num_steps // c.eval_every == grid.EVALS_PER_RUN
    size = grid.size_named(c.study.size)
    assert c.study.non_embedding_params == size.params and c.model.d_model == size.d_model
    assert (
      c.study.tokens
      == c.num_steps * c.batch_size * c.model.n_ctx
      == (int(run.values["steps"]) * p.tokens_per_step)
    )


def test_sizes_and_budgets_parse_and_bad_ones_are_refused():
  sizes = grid.parse_sizes("s0, 2x48")
  assert [s.name for s in sizes] == ["s0", "2x48"] and sizes[1].n_head == 3
  assert grid.parse_budgets("262144,1e6", 2048) == (128, 496)  # up to a multiple of 16 steps
  with pytest.raises(ScalingError, match="the grid is empty"):
    grid.parse_sizes(" , ")
  with pytest.raises(ScalingError, match="the grid is empty"):
    grid.parse_budgets("", 2048)
  with pytest.raises(ScalingError, match="smaller than one batch .2048 tokens"):
    grid.parse_budgets("1000", 2048)
  with pytest.raises(ScalingError, match="unknown size 's9'"):
    grid.parse_sizes("s9")
  with pytest.raises(ScalingError, match="not LAYERSxWIDTH"):
    grid.parse_sizes("2xwide")
  with pytest.raises(ScalingError, match="same size twice"):
    grid.parse_sizes("s1,1x16")
  with pytest.raises(ScalingError, match=r"GiB to train, more than this machine's .* smaller size"):
    grid.check_fits_memory(grid.parse_sizes("48x8192"), 168, 16, 128)
  grid.check_fits_memory(grid.PRESETS["full"].sizes, 168, 16, 128)  # the real grid fits


def test_a_listed_grid_refuses_no_runs_and_repeated_names(tmp_path):
  p = grid.PRESETS["tiny"]
  with pytest.raises(sweep.SweepError, match="the grid has no runs"):
    sweep.run_grid(p.spec, [], str(tmp_path / "g"))
  run = grid.single_run(p.sizes[0], 32, p)
  with pytest.raises(sweep.SweepError, match="share a name"):
    sweep.run_grid(p.spec, [run, run], str(tmp_path / "g"))
  assert not (tmp_path / "g").exists()  # refused before anything is written
