"""The local end-to-end demo: an exchange and a trading node in two network namespaces."""
