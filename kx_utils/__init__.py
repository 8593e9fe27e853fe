"""kx_utils: the helper package of kx, the reproduction of *Extraction of Complex DNN Models:
Real Threat or Boogeyman?* (Atli, Szyller, Juuti, Marchal, Asokan)."""

from .config.profiles import PROFILES, Profile, ProfileError, Recipe, get_profile

__all__ = ["PROFILES", "Profile", "ProfileError", "Recipe", "get_profile"]
