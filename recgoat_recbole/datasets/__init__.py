"""Kept for old imports: the dataset importers are :mod:`recgoat_recbole.importers`; the dataset hook that
RecGOAT reads its features through is :mod:`recgoat_recbole.dataset`."""
