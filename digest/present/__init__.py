"""How a paper is presented, the same to emails, feeds and web pages: its view, its text as
shown, the words marked, its links."""
