"""SaVos (NeurIPS 2022): config, network, losses, test-time adaptation and the inference method."""
