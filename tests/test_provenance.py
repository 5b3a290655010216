"""What a results file says about the machine that made it."""

from research.provenance import cpu_model, provenance, vector_isa


def test_the_vector_instruction_set_is_named_because_numbers_depend_on_it():
  assert vector_isa({"fpu", "avx", "avx2", "fma"}) == "AVX2, no VNNI"
  assert vector_isa({"avx", "avx2", "avx512f", "avx512_vnni"}) == "AVX-512 with VNNI"
  assert vector_isa({"avx", "avx2", "avx_vnni"}) == "AVX2 with VNNI"
  assert vector_isa({"sse2"}) == "no AVX"


def test_the_markdown_header_names_the_cpu_as_cpu_model_does():
  meta = provenance(["scripts/x.py", "--flag"], jax_device=False)
  assert meta["command"] == "python scripts/x.py --flag"
  assert meta["machine"]["cpu"] == cpu_model()
  assert f"- machine: {cpu_model()} (" in meta["markdown"]
