"""What every command shares: the CLI layer (`cli`), shared options (`options`), errors and exit
codes (`errors`), Ray start-up (`ray_startup`), model replicas (`replicas`) and the one image path
(`image_prediction`). Commands import this package and the two libraries, never each other."""
