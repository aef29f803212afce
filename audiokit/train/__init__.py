"""Training: the generic run loop (:mod:`~audiokit.train.trainer`) and one small task per model family
(:mod:`~audiokit.train.task`, :mod:`~audiokit.train.tasks`); recipes, data, checkpoints, EMA, records."""

from audiokit.train.recipe import Recipe, dump_recipe, load_recipe, recipe_from_dict

__all__ = ["Recipe", "dump_recipe", "load_recipe", "recipe_from_dict"]
