"""gainrl: GAIN-RL (arXiv 2506.02281) at DeepSpeed scale: angle-concentration data ranking and
a Gaussian curriculum over it for GRPO fine-tuning of LLMs."""
__version__ = "0.1.0"
