"""`make bench`: warren's costs measured side by side with their baselines in one run."""
