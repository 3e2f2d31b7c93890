import subprocess
import sys


def test_importing_retort_does_not_import_torch():
    code = "import sys, retort; print('torch' in sys.modules, retort.__version__)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split()[0] == "False"


def test_public_names_resolve_lazily():
    import retort

    assert callable(retort.divergence) and callable(retort.distill)
    assert retort.RetortError.__module__ == "retort.errors"
