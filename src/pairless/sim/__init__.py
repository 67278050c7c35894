"""Simulators: the data we cannot get (PET phantom studies, EM noise, classical noise models)."""
