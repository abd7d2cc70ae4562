"""The planner's rules: pure functions over plain data, each testable on its own."""
