"""The channels' carriers: each composes and hands over its channel's deliveries for the
one sender (``delivery/sender.py``)."""
