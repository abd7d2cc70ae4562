"""The browser side of Tidings: the drop-in inbox widget and the demo page."""
