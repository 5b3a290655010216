"""Language-model data: the Markov law and entropy rate, text corpora, windows, datasets."""

import math

import numpy as np
import pytest

from research.data.dataset import DataError, Dataset
from research.data.markov import (
  MarkovSource,
  bits_per_token,
  entropy_rate,
  load_markov_corpus,
  make_markov_source,
  sample_tokens,
  stationary_distribution,
)
from research.data.text import load_text_corpus
from research.data.tokens import TokenCorpus, corpus_to_dataset, decode, encode, windows


def _source(transition):
  p = np.asarray(transition, dtype=np.float64)
  return MarkovSource(p, stationary_distribution(p), p.shape[0])


def _primitive(p):
  """A^k > 0 for k = 1024 >= Wielandt's bound (V-1)^2 + 1, true iff irreducible and aperiodic."""
  m = (p > 0).astype(np.int64)
  for _ in range(10):
    m = np.minimum(m @ m, 1)
  return bool(m.all())


# (a) structure of the random chain


@pytest.mark.parametrize(
  "vocab_size,branching,seed",
  [(2, 2, 0), (5, 2, 3), (32, 4, 0), (32, 4, 7), (16, 16, 1), (50, 3, 2)],
)
def test_source_rows_branching_and_stationary(vocab_size, branching, seed):
  src = make_markov_source(vocab_size, branching, seed)
  p, pi = src.transition, src.stationary
  assert p.shape == (vocab_size, vocab_size) and p.dtype == np.float64
  assert src.vocab_size == vocab_size
  np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
  assert (np.count_nonzero(p, axis=1) == branching).all()
  # the documented guarantee: the ring i -> i + 1 and the self-loop 0 -> 0
  assert (p[np.arange(vocab_size), (np.arange(vocab_size) + 1) % vocab_size] > 0).all()
  assert p[0, 0] > 0
  assert p.min() >= 0
  # every state reaches every other: grow the reachable set from each state
  reach = np.eye(vocab_size, dtype=bool) | (p > 0)
  for _ in range(vocab_size):
    reach = reach | ((reach.astype(np.int64) @ (p > 0).astype(np.int64)) > 0)
  assert reach.all()
  assert _primitive(p)
  assert pi.shape == (vocab_size,) and pi.dtype == np.float64
  assert (pi > 0).all() and abs(pi.sum() - 1.0) < 1e-12
  assert np.abs(pi @ p - pi).max() < 1e-10


def test_source_is_read_only_and_seeded():
  a, b = make_markov_source(seed=5), make_markov_source(seed=5)
  np.testing.assert_array_equal(a.transition, b.transition)
  assert not np.array_equal(a.transition, make_markov_source(seed=6).transition)
  with pytest.raises(ValueError):
    a.transition[0, 0] = 1.0


def test_concentration_shapes_the_entropy():
  peaked = entropy_rate(make_markov_source(32, 4, 0, concentration=0.05))
  flat = entropy_rate(make_markov_source(32, 4, 0, concentration=1000.0))
  assert peaked < 0.5 < math.log(4) - 0.01 < flat <= math.log(4) + 1e-12


@pytest.mark.parametrize(
  "kwargs,words",
  [
    (dict(vocab_size=1, branching=1), "vocab_size must be at least 2"),
    (dict(vocab_size=8, branching=1), "branching must be in [2, vocab_size=8]"),
    (dict(vocab_size=8, branching=9), "branching must be in [2, vocab_size=8]"),
    (dict(concentration=0.0), "concentration must be a positive number"),
    (dict(concentration=float("nan")), "concentration must be a positive number"),
  ],
)
def test_source_bad_arguments(kwargs, words):
  with pytest.raises(DataError) as e:
    make_markov_source(**kwargs)
  assert words in str(e.value)


def test_stationary_rejects_reducible_and_malformed_chains():
  with pytest.raises(DataError, match="reducible"):
    stationary_distribution(np.eye(3))
  with pytest.raises(DataError, match="sum to 1"):
    stationary_distribution(np.array([[0.5, 0.4], [0.5, 0.5]]))
  with pytest.raises(DataError, match="square"):
    stationary_distribution(np.ones((2, 3)) / 3)
  with pytest.raises(DataError, match="non-negative"):
    stationary_distribution(np.array([[1.5, -0.5], [0.5, 0.5]]))


# (b) entropy rate against hand computations


@pytest.mark.parametrize("flip", [0.5, 0.1, 0.01, 0.9])
def test_entropy_rate_symmetric_two_state(flip):
  src = _source([[1 - flip, flip], [flip, 1 - flip]])
  np.testing.assert_allclose(src.stationary, [0.5, 0.5], atol=1e-12)
  binary = -flip * math.log(flip) - (1 - flip) * math.log(1 - flip)
  assert entropy_rate(src) == pytest.approx(binary, abs=1e-12)
  assert bits_per_token(src) == pytest.approx(binary / math.log(2), abs=1e-12)


def test_entropy_rate_asymmetric_two_state():
  a, b = 0.2, 0.6  # P(0 -> 1) = a, P(1 -> 0) = b; pi = (b, a) / (a + b) = (3/4, 1/4)
  src = _source([[1 - a, a], [b, 1 - b]])
  np.testing.assert_allclose(src.stationary, [0.75, 0.25], atol=1e-12)
  h_a = -(0.2 * math.log(0.2) + 0.8 * math.log(0.8))
  h_b = -(0.6 * math.log(0.6) + 0.4 * math.log(0.4))
  assert entropy_rate(src) == pytest.approx(0.75 * h_a + 0.25 * h_b, abs=1e-12)


def test_entropy_rate_three_state_with_zeros():
  # 0 -> 1 -> 2 surely; 2 stays or returns to 0 by a fair coin. pi = (1, 1, 2) / 4 and only
  # state 2 is uncertain (ln 2 nats), so H = pi_2 ln 2 = ln(2) / 2; 0 log 0 must count as 0.
  src = _source([[0, 1, 0], [0, 0, 1], [0.5, 0, 0.5]])
  np.testing.assert_allclose(src.stationary, [0.25, 0.25, 0.5], atol=1e-12)
  assert entropy_rate(src) == pytest.approx(math.log(2) / 2, abs=1e-12)
  assert bits_per_token(src) == pytest.approx(0.5, abs=1e-12)


# (c) samples follow the chain's law


def test_sample_log_loss_and_bigrams_match_the_law():
  src = make_markov_source(32, 4, seed=0)
  x = sample_tokens(src, 200_000, seed=3)
  logp = np.log(src.transition[x[:-1], x[1:]])
  assert np.isfinite(logp).all()  # no impossible transition was ever taken
  assert abs(-logp.mean() - entropy_rate(src)) < 0.01
  counts = np.zeros((32, 32))
  np.add.at(counts, (x[:-1], x[1:]), 1)
  expected = src.stationary[:, None] * src.transition
  assert np.abs(counts / counts.sum() - expected).max() < 2e-3
  assert np.abs(np.bincount(x, minlength=32) / len(x) - src.stationary).max() < 5e-3


def test_first_token_is_drawn_from_the_stationary_distribution():
  src = _source([[0, 1, 0], [0, 0, 1], [0.5, 0, 0.5]])  # pi = (1/4, 1/4, 1/2)
  firsts = np.array([sample_tokens(src, 1, seed=s)[0] for s in range(2000)])
  np.testing.assert_allclose(np.bincount(firsts, minlength=3) / 2000, [0.25, 0.25, 0.5], atol=0.04)


# (d) determinism, (e) sampling output


def test_corpus_is_deterministic_in_its_seeds():
  kw = dict(vocab_size=16, branching=3, train_tokens=5000, val_tokens=500)
  a = load_markov_corpus(**kw, source_seed=0, sample_seed=1)
  b = load_markov_corpus(**kw, source_seed=0, sample_seed=1)
  np.testing.assert_array_equal(a.train, b.train)
  np.testing.assert_array_equal(a.val, b.val)
  other_sample = load_markov_corpus(**kw, source_seed=0, sample_seed=2)
  assert not np.array_equal(a.train, other_sample.train)
  assert other_sample.entropy_rate == a.entropy_rate  # same language, another text
  other_source = load_markov_corpus(**kw, source_seed=1, sample_seed=1)
  assert other_source.entropy_rate != a.entropy_rate


def test_markov_corpus_fields():
  c = load_markov_corpus(vocab_size=16, branching=3, train_tokens=3000, val_tokens=300)
  assert c.train.shape == (3000,) and c.val.shape == (300,)
  assert c.train.dtype == np.int32 and c.val.dtype == np.int32
  assert c.vocab_size == 16 and c.itos is None
  assert 0 < c.entropy_rate < math.log(3)
  assert c.entropy_rate == entropy_rate(make_markov_source(16, 3, 0))
  assert c.train.min() >= 0 and c.train.max() < 16
  with pytest.raises(DataError, match="at least 2"):
    load_markov_corpus(train_tokens=1, val_tokens=10)


def test_sample_tokens_shape_dtype_and_bad_length():
  src = make_markov_source(8, 2, seed=1)
  x = sample_tokens(src, 20_000, seed=0)
  assert x.shape == (20_000,) and x.dtype == np.int32
  assert x.min() >= 0 and x.max() < 8
  np.testing.assert_array_equal(x, sample_tokens(src, 20_000, seed=0))
  with pytest.raises(DataError, match="n_tokens must be at least 1"):
    sample_tokens(src, 0, seed=0)


# (f) text corpora

TEXT = "héllo wörld\r\nhello there, 日本語!\nthe end.\n" * 3


def _write(tmp_path, content, name="corpus.txt"):
  path = tmp_path / name
  path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
  return str(path)


def test_text_round_trip_split_and_vocab(tmp_path):
  path = _write(tmp_path, TEXT)
  c = load_text_corpus(path, val_fraction=0.25)
  assert c.itos == tuple(sorted(set(TEXT))) and c.vocab_size == len(set(TEXT))
  assert list(c.itos) == sorted(c.itos)
  assert c.name == "corpus" and c.entropy_rate is None
  n_train = round(len(TEXT) * 0.75)
  assert len(c.train) == n_train and len(c.train) + len(c.val) == len(TEXT)
  assert decode(c, c.train) == TEXT[:n_train]  # contiguous: train is the head, val the tail
  assert decode(c, c.val) == TEXT[n_train:]
  assert decode(c, np.concatenate([c.train, c.val])) == TEXT
  np.testing.assert_array_equal(encode(c, TEXT[:n_train]), c.train)
  assert c.train.dtype == np.int32
  again = load_text_corpus(path, val_fraction=0.25)
  np.testing.assert_array_equal(again.train, c.train)
  np.testing.assert_array_equal(again.val, c.val)


def test_text_errors(tmp_path):
  cases = [
    (str(tmp_path / "missing.txt"), 0.1, "does not exist"),
    (str(tmp_path), 0.1, "is a directory"),
    (_write(tmp_path, b"", "empty.txt"), 0.1, "is empty"),
    (_write(tmp_path, b"ab\xff\xfecd", "latin.txt"), 0.1, "not valid UTF-8"),
    (_write(tmp_path, "abcdef", "ok.txt"), 0.0, "val_fraction must be in (0, 1)"),
    (_write(tmp_path, "abcdef", "ok.txt"), 1.0, "val_fraction must be in (0, 1)"),
    (_write(tmp_path, "abcdef", "ok.txt"), -0.2, "val_fraction must be in (0, 1)"),
    (_write(tmp_path, "abc", "short.txt"), 0.1, "at least 2"),
    (_write(tmp_path, "abcdefghij", "tiny_train.txt"), 0.9, "at least 2"),
  ]
  for path, fraction, words in cases:
    with pytest.raises(DataError) as e:
      load_text_corpus(path, val_fraction=fraction)
    assert words in str(e.value), (path, fraction, str(e.value))
    assert "\n" not in str(e.value)


def test_decode_and_encode_errors(tmp_path):
  c = load_text_corpus(_write(tmp_path, "abc" * 10))
  with pytest.raises(DataError, match="not in the vocabulary"):
    encode(c, "abz")
  with pytest.raises(DataError, match="outside"):
    decode(c, [0, 3])
  markov = load_markov_corpus(8, 2, train_tokens=100, val_tokens=20)
  with pytest.raises(DataError, match="only on text corpora"):
    decode(markov, markov.train[:5])


def test_token_corpus_validates_and_freezes():
  with pytest.raises(DataError, match="outside"):
    TokenCorpus("bad", np.array([0, 5]), np.array([0, 1]), vocab_size=4)
  with pytest.raises(DataError, match="integer"):
    TokenCorpus("bad", np.array([0.0, 1.0]), np.array([0, 1]), vocab_size=4)
  with pytest.raises(DataError, match="1-D"):
    TokenCorpus("bad", np.zeros((2, 2), int), np.array([0, 1]), vocab_size=4)
  with pytest.raises(DataError, match="itos"):
    TokenCorpus("bad", np.array([0, 1]), np.array([0, 1]), vocab_size=4, itos=("a", "b"))
  source = np.array([0, 1, 2, 3], dtype=np.int64)
  c = TokenCorpus("ok", source, source, vocab_size=4)
  assert c.train.dtype == np.int32 and not c.train.flags.writeable
  source[0] = 3  # the corpus holds its own copy
  assert c.train[0] == 0


# (g) windows


def test_windows_default_stride_is_non_overlapping():
  x, y = windows(np.arange(23), n_ctx=5)
  assert x.shape == y.shape == (4, 5) and x.dtype == y.dtype == np.int32
  np.testing.assert_array_equal(x, np.arange(20).reshape(4, 5))
  np.testing.assert_array_equal(y, x + 1)


@pytest.mark.parametrize("n_ctx,stride", [(1, 1), (4, 1), (4, 3), (7, 7), (5, 11)])
def test_windows_shift_by_one(n_ctx, stride):
  tokens = np.random.default_rng(0).integers(0, 50, size=100)
  x, y = windows(tokens, n_ctx, stride)
  assert len(x) == (len(tokens) - n_ctx - 1) // stride + 1
  for i in range(len(x)):
    np.testing.assert_array_equal(x[i], tokens[i * stride : i * stride + n_ctx])
    np.testing.assert_array_equal(y[i], tokens[i * stride + 1 : i * stride + n_ctx + 1])
  np.testing.assert_array_equal(x[:, 1:], y[:, :-1])


def test_windows_edges_and_errors():
  x, y = windows(np.arange(9), n_ctx=8)  # exactly n_ctx + 1 tokens: one window
  assert x.shape == (1, 8)
  np.testing.assert_array_equal(y[0], np.arange(1, 9))
  with pytest.raises(DataError, match="needs 9"):
    windows(np.arange(8), n_ctx=8)
  with pytest.raises(DataError, match="n_ctx must be at least 1"):
    windows(np.arange(8), n_ctx=0)
  with pytest.raises(DataError, match="stride must be at least 1"):
    windows(np.arange(8), n_ctx=2, stride=0)
  with pytest.raises(DataError, match="1-D"):
    windows(np.zeros((4, 4), int), n_ctx=2)


# (h) datasets


def test_corpus_to_dataset_markov_and_text(tmp_path):
  c = load_markov_corpus(16, 3, train_tokens=1000, val_tokens=200)
  ds = corpus_to_dataset(c, n_ctx=16)
  assert isinstance(ds, Dataset)
  assert ds.x_train.shape == ds.y_train.shape == ((1000 - 17) // 16 + 1, 16)
  assert ds.x_test.shape == ds.y_test.shape == ((200 - 17) // 16 + 1, 16)
  for a in (ds.x_train, ds.y_train, ds.x_test, ds.y_test):
    assert a.dtype == np.int32
  assert ds.num_classes == 16 and ds.input_shape == (16,)
  np.testing.assert_array_equal(ds.x_train[0], c.train[:16])
  np.testing.assert_array_equal(ds.y_test[0], c.val[1:17])
  text = load_text_corpus(_write(tmp_path, TEXT), val_fraction=0.2)
  tds = corpus_to_dataset(text, n_ctx=8)
  assert tds.x_train.shape[1:] == (8,) and tds.num_classes == text.vocab_size
  assert decode(text, tds.x_train[0]) == TEXT[:8]
  assert decode(text, tds.y_train[0]) == TEXT[1:9]
