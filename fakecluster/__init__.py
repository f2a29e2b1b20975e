"""An in-process Kubernetes API server for tests and benchmarks (docs/fake-cluster.md).

It speaks the real REST wire protocol on 127.0.0.1 so that the official ``kubernetes`` client, used
unchanged, cannot tell it from kube-apiserver for the resources this project uses. Imports nothing
else of ours: it stands in for the cluster our code talks to, so it must not share that code.
"""

from fakecluster.server import FakeApiServer

__all__ = ["FakeApiServer"]
