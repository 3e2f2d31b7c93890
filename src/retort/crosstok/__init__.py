"""Cross-tokenizer distillation: teacher and student tokens of the same text, aligned by bytes.

- ``vocab_bytes``: the UTF-8 bytes each token id stands for in running text, and the byte spans
  of a tokenized text.
- ``align``: groups of teacher and student positions that end at the same byte.
- ``targets``: per student completion position, what the loss compares there (the teacher's
  top-k on the student's vocabulary where one token matches one token, else a ULD group).
"""
