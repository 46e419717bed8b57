"""recgoat-recbole: RecGOAT (arXiv 2602.00682) as a RecBole plugin."""
from recgoat_recbole import compat as _compat

_compat.apply()
