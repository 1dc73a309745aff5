"""rtrl_rl: online recurrent actor-critic RL with exact RTRL."""
__version__ = "0.1.0"
