"""Studies: questions answered end to end from the layers below. The main job (train_vs_infer.py,
every engine timed in engine_timing.py, its report in cost_report.py and its figure in
cost_figure.py; a language model's path, in tokens, in train_vs_infer_lm.py), a language model's
training against generation (lm_costs.py), its decode against its peers (lm_peers.py), its
serving under load (serve_lm.py, its report in serve_lm_report.py), and the MNIST-1D paper's
Table 1 (mnist1d_table1/)."""

from research.errors import UserError


class StudyError(UserError, RuntimeError):
  """A study that cannot go on (a process it runs failed); the message says which and why."""
