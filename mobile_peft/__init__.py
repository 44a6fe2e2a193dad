"""mobile-peft: on-device fine-tuning of mobile vision-language models."""

__version__ = "0.1.0"
