"""Email providers behind one interface: SMTP, the built-in mail catcher, Amazon SES."""
