"""All SQL of the inbox, one module per concern: ``writes`` (storing items, merging a
group's next event into its open item), ``reads`` (a user's items: pages, counts, one
item, the live stream's keyset), ``flags`` (read, seen, archived), ``broadcasts`` (the
in-app item of a large topic's event, stored once and read into each subscriber's inbox,
and what each user did with it)."""
