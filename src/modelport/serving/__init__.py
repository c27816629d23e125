"""Serving: the protocol-free data plane (model pool, routing, batching) and its thin adapters (REST
for the Open Inference Protocol and MLflow scoring)."""
