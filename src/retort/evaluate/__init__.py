"""Evaluation: how much of the teacher a student kept, side by side with the teacher."""
