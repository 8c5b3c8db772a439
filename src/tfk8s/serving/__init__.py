"""Serving: the local model server, the client, image preparation, model config and batch scoring."""
