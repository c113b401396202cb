"""Analysis tools: `torchyard tools count-params|publish-model|plot-logs|tsne ...`."""
