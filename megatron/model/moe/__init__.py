"""Mixture-of-Experts: config, router, token exchange, the MoE layer, step statistics."""
