"""Timing harness and benchmarks.

timing.py              calls timed one by one, blocking on each; medians and tails
latency.py             an engine's batch-1 latency (serving path, bare call, compute) and sweep
inference.py           the inference benchmark of one run on every engine (bench.json, bench.md)
inference_settings.py  its settings and the (engine, backend, precision) configurations
inference_loadgen.py   its MLPerf LoadGen scenarios per engine
inference_report.py    bench.md's tables
loadgen/               LoadGen scenarios around any predictor, and the Server QPS search
generation.py          a language model's generation latency and throughput
torch_lm.py            the LM decode peers in PyTorch: HF GPT-2 generate and a plain decoder
batch1_path.py         where the jitted apply's batch-1 time goes
train_loop.py          which training-loop structure is fastest
trace.py               a jax.profiler trace of inference
figures.py             the figures of timings and costs
"""
