"""Mimir: an educational AI tutor whose multi-agent LLM pipeline runs inside a memory budget.

``import mimir`` is light: heavy libraries (llama.cpp, transformers, gradio) load only when a
feature that needs them is used.
"""

__version__ = "0.1.0"
