"""The continuous-batching engine: the same tokens as generating alone, slots freed and reused, no
compilation after warm-up, one-line errors for requests it cannot serve."""

import functools
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.errors import UserError
from research.models.transformer import Transformer
from research.serving.decode_engine import (
  DecodeEngine,
  Request,
  Scheduler,
  for_serving,
  kv_cache_bytes,
  max_slots,
  serve,
)
from research.serving.generate import GenerationError, Generator

VOCAB, N_CTX = 32, 32
MODEL = Transformer(num_classes=VOCAB, n_layer=2, d_model=32, n_head=4, d_ff=64, n_ctx=N_CTX)


@functools.lru_cache(maxsize=None)
def _params():
  """Random weights scaled up, so that a random model's greedy output is not a constant repeat."""
  init = lambda key: jax.tree.map(  # noqa: E731
    lambda x: 8.0 * x, MODEL.init(key, jnp.zeros((1, N_CTX), jnp.int32))
  )
  return jax.jit(init)(jax.random.key(0))


# Exact token equality between differently shaped computations needs full float32 matmuls: a
# GPU's default (TF32) rounds differently per shape. CPU computes float32 either way.
FULL_F32 = functools.partial(jax.default_matmul_precision, "float32")


@functools.lru_cache(maxsize=None)
def _engine(slots: int, prefill_batch: int = 1) -> DecodeEngine:
  """One warmed-up engine per slot count, shared by the tests (the compiles dominate)."""
  with FULL_F32():
    return _warm_engine(slots, prefill_batch)


def _warm_engine(slots: int, prefill_batch: int = 1) -> DecodeEngine:
  engine = DecodeEngine(
    for_serving(MODEL),
    _params(),
    slots,
    prefill_buckets=(8, 32),
    decode_buckets=(16, 32),
    prune_decode_buckets=False,  # every bucket serves, whatever this machine's timings
    prefill_batch=prefill_batch,
  )
  engine.warmup()
  return engine


def _requests() -> list[Request]:
  """Prompts of 1 to 14 tokens, 2 to 20 new tokens (both vary 10x), two of them sampled."""
  rng = np.random.default_rng(0)
  shapes = [(1, 20), (14, 2), (3, 9), (8, 4), (5, 16), (12, 6), (2, 3), (9, 12)]
  out = [Request(f"g{i}", rng.integers(0, VOCAB, p).tolist(), n) for i, (p, n) in enumerate(shapes)]
  out += [
    Request("s0", rng.integers(0, VOCAB, 4).tolist(), 10, temperature=1.0, key=7),
    Request("s1", rng.integers(0, VOCAB, 9).tolist(), 14, temperature=0.7, key=jax.random.key(3)),
  ]
  return out


@functools.lru_cache(maxsize=None)
def _alone() -> dict:
  """Each request generated on its own by the lockstep Generator (default cache layout)."""
  gen, out = Generator(MODEL), {}
  for r in _requests():
    key = jax.random.key(r.key) if isinstance(r.key, int) else r.key
    with FULL_F32():
      tokens = gen.generate(
        _params(), jnp.asarray([r.prompt]), r.max_new_tokens, r.temperature, key
      )
    out[r.id] = np.asarray(tokens)[0].tolist()
  return out


def _tokens(results) -> dict:
  return {k: c.tokens for k, c in results.items()}


@pytest.mark.parametrize("slots, prefill_batch", [(1, 1), (2, 1), (3, 1), (4, 4)])
def test_continuous_batching_gives_each_request_its_own_tokens_in_any_order(slots, prefill_batch):
  expected = _alone()
  assert len({len(v) for v in expected.values()}) > 4  # lengths vary
  assert all(len(set(v)) > 1 for v in expected.values() if len(v) > 3)  # not constant repeats
  engine = _engine(slots, prefill_batch)
  for seed in (0, 1):
    order = list(np.random.default_rng(seed + 10 * slots).permutation(len(_requests())))
    requests = [_requests()[i] for i in order]
    results = serve(engine, requests, "continuous")
    assert _tokens(results) == expected
    assert all(c.finish_reason == "length" for c in results.values())
  assert engine.compilations_after_warmup == 0


def test_static_batching_and_paced_prefills_give_the_same_tokens():
  expected = _alone()
  for slots in (2, 3):
    results = serve(_engine(slots), _requests()[::-1], "static")
    assert _tokens(results) == expected
  one_prefill_a_step = serve(_engine(3), _requests(), max_prefills_per_step=1)
  assert _tokens(one_prefill_a_step) == expected
  batched = _engine(4, 4)
  before = batched.compilations_after_warmup  # (other tests compile after its warm-up)
  assert _tokens(serve(batched, _requests()[::-1], "static")) == expected
  assert batched.prefill_batch_sizes == (1, 2, 4) and batched.compilations_after_warmup == before


def test_requests_arriving_over_time_are_served_after_they_arrive():
  requests = _requests()[:5]
  arrivals = [0.0, 0.004, 0.008, 0.012, 0.016]
  streamed, done = {}, []
  for mode, kw in (("continuous", {}), ("static", {"static_wait_s": 0.002})):
    streamed.clear()
    results = serve(
      _engine(3),
      requests,
      mode,
      arrival_s=arrivals,
      on_first_token=lambda i, tok, t: streamed.setdefault(i, []).append(tok),
      on_token=lambda i, tok, t: streamed[i].append(tok),
      on_done=lambda i, tokens, t: done.append(i),
      **kw,
    )
    assert _tokens(results) == {r.id: _alone()[r.id] for r in requests} == streamed
    for c, at in zip((results[r.id] for r in requests), arrivals):
      assert at == pytest.approx(c.arrival_s) and c.arrival_s <= c.first_token_s <= c.done_s
  assert sorted(done) == sorted(2 * [r.id for r in requests])


def test_a_finished_request_frees_its_slot_for_the_next():
  engine = _engine(2)
  short, long_, nxt = (
    Request("short", [1, 2, 3], 2),
    Request("long", [4, 5], 20),
    Request("next", [6, 7, 8, 9], 3),
  )
  cont = serve(engine, [short, long_, nxt], "continuous")
  assert cont["next"].slot == cont["short"].slot != cont["long"].slot
  assert cont["short"].done_s < cont["next"].first_token_s < cont["long"].done_s
  static = serve(engine, [short, long_, nxt], "static")
  assert static["next"].first_token_s > static["long"].done_s  # waits for its batch's longest
  assert _tokens(static) == _tokens(cont)
  assert engine.free_slots() == [0, 1]


def test_the_engine_api_places_each_prefix_at_its_own_position():
  engine = _engine(3)
  a = engine.prefill(Request("a", [1, 2, 3, 4, 5], 4))
  b = engine.prefill(Request("b", list(range(12)), 4))
  assert (a.length, a.bucket, b.length, b.bucket) == (5, 8, 12, 32)
  engine.insert(a, 2)
  engine.insert(b, 0)
  assert engine.active_slots() == [0, 2] and engine.free_slots() == [1]
  with pytest.raises(ValueError, match="not a free slot"):
    engine.insert(a, 0)
  tokens = engine.generate()
  assert tokens.shape == (3,)
  assert (engine.position(0), engine.position(2)) == (13, 6)
  with FULL_F32():
    alone = Generator(MODEL).generate(_params(), jnp.asarray([list(range(12))]), 2)
  assert [b.first_token, int(tokens[0])] == np.asarray(alone)[0].tolist()
  engine.free(0)
  engine.free(2)
  assert engine.free_slots() == [0, 1, 2]


def test_a_stop_token_ends_a_request_and_is_returned():
  request = _requests()[0]
  tokens = _alone()[request.id]
  stop = next(t for i, t in enumerate(tokens) if i >= 2 and t not in tokens[:i])
  cut = tokens[: tokens.index(stop) + 1]
  results = serve(_engine(2), [Request("x", request.prompt, 20, stop_tokens=(stop,))])
  assert results["x"].tokens == cut and results["x"].finish_reason == "stop"


def test_no_compilation_after_warmup_and_the_count_would_see_one():
  engine = _engine(3)
  before = engine.compilations_after_warmup
  rng = np.random.default_rng(5)
  requests = [  # every prefill and decode bucket: prompts 1..31, contexts up to n_ctx
    Request(i, rng.integers(0, VOCAB, p).tolist(), n)
    for i, (p, n) in enumerate([(1, 31), (31, 1), (7, 25), (20, 12), (9, 2), (16, 16)])
  ]
  serve(engine, requests, "continuous")
  serve(engine, requests, "static")
  assert engine.compilations_after_warmup == before  # (earlier tests compiled references)
  jax.jit(lambda x: x * 3 + 1)(np.arange(7))  # a compilation of anything is counted
  assert engine.compilations_after_warmup == before + 1


def test_requests_added_from_another_thread_while_stepping():
  """The shape a LoadGen system under test takes: its thread adds requests, one loop steps."""
  requests = _requests()[:6]
  firsts = []
  scheduler = Scheduler(_engine(2), on_first_token=lambda i, tok, t: firsts.append(i))

  def issue():
    for r in requests:
      scheduler.add_request(r)
      time.sleep(0.002)
    scheduler.close()

  thread = threading.Thread(target=issue)
  thread.start()
  while thread.is_alive() or not scheduler.idle:
    if not scheduler.step():
      scheduler.wait_for_request(timeout=0.01)
  thread.join()
  assert {r.id: scheduler.results[r.id].tokens for r in requests} == {
    r.id: _alone()[r.id] for r in requests
  }
  assert sorted(firsts) == sorted(r.id for r in requests)
  for c in scheduler.results.values():
    assert c.arrival_s <= c.first_token_s <= c.done_s


def test_decode_buckets_slower_than_a_larger_one_are_dropped():
  engine = DecodeEngine(MODEL, _params(), 2, decode_buckets=(4, 8, 16))  # not warmed up
  assert engine.decode_buckets == (4, 8, 16, 32)
  engine._generate_exe = dict.fromkeys(engine.decode_buckets)
  engine.decode_step_seconds = {4: 1.0, 8: 3.0, 16: 2.5, 32: 2.0}
  engine._prune_decode_buckets()
  assert engine.decode_buckets == (4, 32) and set(engine._generate_exe) == {4, 32}
  assert [engine._bucket_of[n] for n in (1, 4, 5, 17, 32)] == [4, 4, 32, 32, 32]


def test_kv_cache_bytes_and_slots_in_a_budget():
  b = kv_cache_bytes(MODEL)
  assert b["per_token"] == 2 * 2 * 32 * 4  # layers x (k, v) x d_model x float32
  assert b["per_slot"] == b["per_token"] * N_CTX
  assert kv_cache_bytes(for_serving(MODEL)) == b
  params_bytes = sum(x.nbytes for x in jax.tree.leaves(_params()))
  assert max_slots(MODEL, params_bytes + 5 * b["per_slot"] + 7, _params()) == 5
  assert max_slots(MODEL, 3 * b["per_slot"]) == 3


def _one_line_error(fn, *fix_words):
  with pytest.raises(GenerationError) as e:
    fn()
  text = str(e.value)
  assert isinstance(e.value, UserError) and "\n" not in text
  for word in fix_words:
    assert word in text
  return text


def test_bad_requests_are_one_line_errors_naming_the_fix_and_leave_nothing_behind():
  engine = _engine(2)
  scheduler = Scheduler(engine)
  bad = {
    "context": (Request("c", [1] * 20, 13), ("n_ctx=32", "lower max_new_tokens to 12")),
    "zero": (Request("z", [1, 2], 0), ("max_new_tokens", ">= 1")),
    "vocab": (Request("v", [1, VOCAB], 3), ("[0, 32)", "vocabulary")),
    "negative": (Request("n", [-1, 2], 3), ("[0, 32)",)),
    "sampling": (Request("k", [1], 3, temperature=0.5), ("key",)),
  }
  for request, words in bad.values():
    _one_line_error(lambda r=request: scheduler.add_request(r), *words)
    _one_line_error(lambda r=request: engine.prefill(r), *words)
    _one_line_error(lambda r=request: serve(engine, [Request("ok", [1], 2), r]), *words)
  assert scheduler.idle and scheduler.results == {} and engine.free_slots() == [0, 1]


def test_more_slots_than_the_memory_budget_holds_is_refused():
  per_slot = kv_cache_bytes(MODEL)["per_slot"]
  params_bytes = sum(x.nbytes for x in jax.tree.leaves(_params()))
  budget = params_bytes + 4 * per_slot
  text = _one_line_error(
    lambda: DecodeEngine(MODEL, _params(), 5, memory_budget_bytes=budget),
    "5 slots",
    "holds 4",
    "use at most 4 slots or raise the memory budget",
  )
  assert "MiB" in text
  DecodeEngine(MODEL, _params(), 4, memory_budget_bytes=budget)  # fits: no compilation yet
