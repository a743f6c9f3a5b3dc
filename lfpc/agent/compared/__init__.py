"""Compared methods prompted and read as their own evaluation code does (paper Sec. 5.1, Tables 1, 2, 6).

One module per method: its prompt texts (facts from its released code, cited in the module docstring), how it reads
a turn (tool-call format, coordinate convention, answer format, which turn ends the episode), the layout of its
tool responses and its crop margin. :mod:`lfpc.agent.presets` turns each into a :class:`~lfpc.agent.presets.Preset`.
"""
