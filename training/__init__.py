"""Offline stage of intsr (paper Section IV, Algorithm 1) in PyTorch, CPU.

Lives outside the ``intsr`` package on purpose: ``intsr`` never imports torch. Data are made with
``intsr.floatpath.degrade`` (NumPy) so that training and the device see the same degradation.
"""
