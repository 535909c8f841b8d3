"""The command line, `slipway` (entry point `slipway.cli.main:main`): one module per group of verbs.

The top layer: the only code that imports `slipway.pipelines` (compile, run locally, submit). Keeps heavy
imports (torch, ONNX, scikit-learn) inside the commands, so that `slipway --help` stays fast.
"""
