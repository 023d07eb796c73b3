"""The pure core: crypto, domain models and protocol state machines. No network, no servers."""
