"""An example shop whose web apps and scripts hand slow work to Celeriac workers."""
