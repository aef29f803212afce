"""Training: recipes, manifest data with augmentation, checkpoints, EMA and the trainer loop."""

from audiokit.train.recipe import Recipe, dump_recipe, load_recipe, recipe_from_dict

__all__ = ["Recipe", "dump_recipe", "load_recipe", "recipe_from_dict"]
