"""Synthetic tasks with known answers, for tests and the CPU demo.

Each task module has `make_problems(num_rows, seed, weights, *, exclude, id_prefix)` (rows
{id, problem, answer, difficulty, ...}) and `problem_key(row)`, what must not repeat across
a training and a held-out split.
"""
