"""Test doubles that ship with the package: a loopback Hugging Face Hub, a scripted model and a playbook model.

They speak the real protocols (HTTP for the Hub; the ChatModel seam for the models) so that tests, benchmarks
and the offline demo drive the production code unchanged. Nothing in a production path imports them."""
