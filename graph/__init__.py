"""KServe's InferenceGraph router (serving.kserve.io/v1alpha1) on our HTTP engine: `kpa graph`.

Pure cores: ``spec`` (read and check the YAML), ``condition`` (GJSON conditions), ``routing`` (which
step, merged answers, error bodies), ``targets`` (where a step's request goes). Shell: ``executor``
(runs the nodes) and ``router`` (the HTTP server, upstream pools, timeouts, /metrics).
See docs/inference-graph.md.
"""
