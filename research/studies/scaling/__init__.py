"""Inference-aware scaling (Hoffmann et al. 2022; Sardana et al. 2024) on measured costs.

- law.py: the loss law L(N, D) and the published fits.
"""
