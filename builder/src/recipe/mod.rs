//! (builder-recipe: in progress)
