"""The Kubernetes backend: the controller that scales enrolled Deployments and KServe predictors.

Pure cores (which objects enrol and with which settings; what a revision's EndpointSlice holds)
sit beside the shells that watch the API server and write to it.
"""
