"""kx_utils: the helper package of kx, the reproduction of *Extraction of Complex DNN Models:
Real Threat or Boogeyman?* (Atli, Szyller, Juuti, Marchal, Asokan)."""

from .config.profiles import PROFILES, get_profile
from .config.schema import Profile
from .core.recipe import Recipe
from .core.settings import ProfileError

__all__ = ["PROFILES", "Profile", "ProfileError", "Recipe", "get_profile"]
